"""Every module on every discrete-action MPE scenario (agents of different shapes included) and on a
SMAX map of mixed unit types, with tiny budgets: the programs build, run, learn something, keep padded
actions unused and padded observation entries zero, and log per-agent returns where asked.

(The MPE_simple_facmac scenarios have continuous actions only and are rejected with a clear error.)

Each MPE run costs a compile of ~10-25 s, so the default suite runs a covering subset: every scenario
with one module, every module on at least one scenario. The other pairs are
marked ``slow`` (so are the SMAX runs but qmix_ns's: the CLI tests run the ``_ps`` ones on 2s3z);
``python -m pytest -m slow tests/test_scenarios.py`` runs them (the whole matrix takes
~20 minutes on 2 cores).
"""
import importlib

import jax
import numpy as np
import pytest

from purejaxql.config import ConfigError
from purejaxql.environments import make_env

MPE = ["MPE_simple_v3", "MPE_simple_tag_v3", "MPE_simple_world_comm_v3", "MPE_simple_spread_v3",
       "MPE_simple_crypto_v3", "MPE_simple_speaker_listener_v4", "MPE_simple_push_v3",
       "MPE_simple_adversary_v3", "MPE_simple_reference_v3"]
ALGS = ("iql", "vdn", "qmix")
MODULES = [f"{alg}_{v}" for v in ("ps", "ns") for alg in ALGS]
UPDATES = 3
# by default scenario i runs with one module, MODULES[i % 6] (so each module runs on one or two scenarios);
# IQL's per-agent logging on the competitive simple_tag runs through the CLI (tests/test_cli.py)
COVER = {(s, MODULES[i % len(MODULES)]) for i, s in enumerate(MPE)}
MPE_CASES = [pytest.param(s, m, id=f"{s}-{m}", marks=() if (s, m) in COVER else pytest.mark.slow)
             for s in MPE for m in MODULES]


def tiny(env, **extra):
    steps = 25
    return {"NUM_ENVS": 2, "NUM_STEPS": steps, "TOTAL_TIMESTEPS": 2 * steps * UPDATES, "BUFFER_SIZE": 8,
            "BUFFER_BATCH_SIZE": 2, "LEARNING_STARTS": 0, "TARGET_UPDATE_INTERVAL": 1,
            "AGENT_HIDDEN_DIM": 8, "MIXER_EMBEDDING_DIM": 4, "MIXER_HYPERNET_HIDDEN_DIM": 8,
            "TEST_NUM_ENVS": 2, "TEST_INTERVAL": 0.5, **extra}


def run(module, env, config):
    mod = importlib.import_module(f"purejaxql.{module}")
    if not module.startswith("qmix"):
        config = {k: v for k, v in config.items() if not k.startswith("MIXER")}
    train = mod.make_train(config, env)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    return train, out


def check_run(module, env, train, out):
    w = train.env
    m = jax.tree.map(np.asarray, out["metrics"])
    assert m["grad_steps"][-1] == UPDATES - 1
    assert np.isfinite(m["loss"][1:]).all() and np.isfinite(m["qvals"][1:]).all()
    # parameters moved, for every agent of the _ns variants
    p0 = jax.jit(lambda k: train.init(k).train.params["agent"])(jax.random.PRNGKey(0))
    p1 = out["runner_state"].train.params["agent"]
    k0, k1 = (np.asarray(p["params"]["Dense_1"]["kernel"]) for p in (p0, p1))
    if module.endswith("_ns"):
        assert k1.shape[0] == w.num_agents
        for i in range(w.num_agents):
            assert not np.array_equal(k0[i], k1[i]), f"agent {i} was not trained"
    else:
        assert not np.array_equal(k0, k1)
    # replay content: padded actions never taken, padded observation entries zero, id only for _ps
    exp = jax.tree.map(np.asarray, out["runner_state"].buffer.experience)
    assert exp.obs.shape[-1] == w.max_obs_length + (w.num_agents if module.endswith("_ps") else 0)
    for i, (n_obs, n_act) in enumerate(zip(w.obs_dims, w.action_dims)):
        assert exp.actions[..., i].max() < n_act, w.agents[i]
        assert np.all(exp.obs[..., i, n_obs:w.max_obs_length] == 0), w.agents[i]
        if module.endswith("_ps"):
            np.testing.assert_array_equal(exp.obs[:, :UPDATES, :, i, w.max_obs_length:],
                                          np.broadcast_to(np.eye(w.num_agents)[i],
                                                          exp.obs[:, :UPDATES, :, i, w.max_obs_length:].shape))
    return m


@pytest.mark.parametrize("env_name,module", MPE_CASES)
def test_mpe_scenario(env_name, module):
    env = make_env({"ENV_NAME": env_name})
    train, out = run(module, env, tiny(env))
    m = check_run(module, env, train, out)
    # one MPE episode (26 steps) ends within the 3 updates and in every greedy evaluation
    assert np.isfinite(m["returned_episode_returns"][-1])
    assert np.isfinite(m["test_returned_episode_returns"]).all()
    per_agent = [f"test_returned_episode_returns_{a}" for a in env.agents]
    if module.startswith("iql"):  # LOG_AGENTS_SEPARATELY is on by default for IQL
        total = sum(m[k] for k in per_agent)
        np.testing.assert_allclose(total, m["test_returned_episode_returns"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(sum(m[f"returned_episode_returns_{a}"][-1] for a in env.agents),
                                   m["returned_episode_returns"][-1], rtol=1e-5, atol=1e-4)
        if env_name == "MPE_simple_tag_v3":
            adv = sum(m[f"test_returned_episode_returns_adversary_{i}"] for i in range(3))
            np.testing.assert_allclose(m["test_returned_episode_returns_team_adversary"], adv, rtol=1e-5)
    else:
        assert not any(k in m for k in per_agent)


# the _ps modules also run on 2s3z end to end in tests/test_cli.py (each alg's SMAX config), and every _ns
# module runs on MPE scenarios above, so by default only qmix_ns runs here
@pytest.mark.parametrize("module", [pytest.param(m, marks=() if m == "qmix_ns" else pytest.mark.slow)
                                    for m in MODULES])
def test_smax_mixed_unit_types(module):
    env = make_env({"ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "2s3z"})
    train, out = run(module, env, tiny(env, TEST_NUM_STEPS=10))
    m = check_run(module, env, train, out)
    assert "test_returned_won_episode" in m


def test_continuous_only_scenario_is_rejected():
    env = make_env({"ENV_NAME": "MPE_simple_facmac_v1"})
    with pytest.raises(ConfigError, match="continuous action"):
        run("vdn_ps", env, tiny(env))
