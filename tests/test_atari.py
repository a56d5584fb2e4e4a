"""Atari through EnvPool (purejaxql.atari_env): the program sees exactly the frames, rewards and ends an
EnvPool pool of the same seed gives, each batch reset site has its own pool (the greedy evaluation does not
disturb the training games), the Nature-CNN strides shape the torso, bad input is named, and the pqn_atari
command trains at toy sizes.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql import pqn_atari
from purejaxql.config import ConfigError
from purejaxql.environments import CTRolloutManager, make_env
from purejaxql.networks import AgentNetwork
from test_defaults import shipped

import envpool  # the atari extra is part of the test extra

KWARGS = {"episodic_life": True, "reward_clip": True, "noop_max": 30, "frame_skip": 4,
          "repeat_action_probability": 0.0}


def actions_for(steps, envs, n):
    return np.random.default_rng(0).integers(0, n, (steps, envs)).astype(np.int32)


def test_the_program_sees_what_envpool_gives():
    kwargs = {**KWARGS, "max_episode_steps": 25}   # time limits inside the 60 steps
    team = make_env({"ENV_NAME": "Breakout-v5", "ENV_KWARGS": kwargs, "SEED": 3})
    wrapped = CTRolloutManager(team, 4, add_agent_id=False)
    acts = actions_for(60, 4, team.action_space().n)

    @jax.jit
    def run(key):
        obs, states = wrapped.batch_reset(key)

        def step(states, a):
            o, states, r, d, info = wrapped.batch_step(key, states, {"agent_0": a})
            return states, (o["agent_0"], r["agent_0"], d["__all__"], info["truncated"])
        return obs["agent_0"], jax.lax.scan(step, states, acts)[1]

    obs0, (obs, rew, done, trunc) = run(jax.random.PRNGKey(0))
    ref = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=4, batch_size=4, seed=3, **kwargs)
    ref.reset()
    want0, _ = ref.reset()   # the adapter's pool is reset once when made, then by batch_reset

    def image(frames):       # (B, 4, 84, 84) uint8 -> flat (B, 84*84*4) as the agent sees it
        return (np.transpose(frames, (0, 2, 3, 1)).astype(np.float32) / 255.0).reshape(frames.shape[0], -1)
    np.testing.assert_allclose(np.asarray(obs0), image(want0), atol=1e-7)
    for t in range(60):
        f, r, term, tr, _ = ref.step(acts[t])
        np.testing.assert_allclose(np.asarray(obs[t]), image(f), atol=1e-7)
        np.testing.assert_array_equal(np.asarray(rew[t]), r)
        np.testing.assert_array_equal(np.asarray(done[t]), term | tr)
        np.testing.assert_array_equal(np.asarray(trunc[t]), tr & ~term)
    assert np.asarray(trunc).any() and (np.asarray(done) & ~np.asarray(trunc)).any()   # both kinds of end seen
    assert obs.shape[-1] == 84 * 84 * 4 and team.max_steps == 25


def test_each_reset_site_has_its_own_pool():
    """Training games (4) interleaved with an evaluation batch (2) reset and stepped between their steps: the
    training frames equal those of an uninterrupted pool."""
    team = make_env({"ENV_NAME": "Pong-v5", "ENV_KWARGS": KWARGS, "SEED": 0})
    train, test = CTRolloutManager(team, 4, add_agent_id=False), CTRolloutManager(team, 2, add_agent_id=False)
    acts = actions_for(20, 4, team.action_space().n)

    @jax.jit
    def run(key):
        _, states = train.batch_reset(key)

        def step(states, a):
            o, states, _, _, _ = train.batch_step(key, states, {"agent_0": a})
            _, t_states = test.batch_reset(key)                       # an evaluation in between
            test.batch_step(key, t_states, {"agent_0": a[:2]})
            return states, o["agent_0"]
        return jax.lax.scan(step, states, acts)[1]

    frames = np.asarray(run(jax.random.PRNGKey(0)))
    ref = envpool.make("Pong-v5", env_type="gymnasium", num_envs=4, batch_size=4, seed=0, **KWARGS)
    ref.reset(), ref.reset()
    for t in range(20):
        f = ref.step(acts[t])[0]
        np.testing.assert_allclose(frames[t], (np.transpose(f, (0, 2, 3, 1)) / np.float32(255)).reshape(4, -1),
                                   atol=1e-7)


def test_nature_cnn_strides():
    net = AgentNetwork(action_dim=6, hidden_dim=32, recurrent=False, image_shape=(84, 84, 4),
                       cnn_channels=(32, 64, 64), cnn_kernel_sizes=(8, 4, 3), cnn_strides=(4, 2, 1))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 32)), jnp.zeros((1, 1, 84 * 84 * 4)),
                      jnp.zeros((1, 1), bool))
    # 84 -> (84 - 8) // 4 + 1 = 20 -> (20 - 4) // 2 + 1 = 9 -> 9 - 3 + 1 = 7: 7 * 7 * 64 features into Dense_0
    assert params["params"]["Dense_0"]["kernel"].shape == (7 * 7 * 64, 32)
    assert params["params"]["Conv_0"]["kernel"].shape == (8, 8, 4, 32)


def test_bad_atari_input_is_named(monkeypatch, tmp_path):
    cfg = {**shipped("pqn_atari"), "AGENT_TYPE": "cnn"}
    with pytest.raises(ConfigError, match="close matches: .*'Breakout-v5'"):
        make_env({"ENV_NAME": "Breakot-v5"})
    with pytest.raises(ConfigError, match=r"ENV_KWARGS \['episodic_lives'\] for Pong-v5"):
        make_env({"ENV_NAME": "Pong-v5", "ENV_KWARGS": {"episodic_lives": True}})
    with pytest.raises(ConfigError, match="Ant-v5 is not an Atari game"):
        make_env({"ENV_NAME": "Ant-v5"})
    env = make_env(cfg)
    for strides, msg in (([4, 2], "must have one entry per convolution"), ([8, 8, 8], "do not fit the 84 x 84")):
        with pytest.raises(ConfigError, match=msg):
            pqn_atari.make_train({**cfg, "CNN_STRIDES": strides}, env)
    from purejaxql.experiment import run_experiment
    with pytest.raises(ConfigError, match="one seed per process, so NUM_SEEDS must be 1"):
        run_experiment(pqn_atari.SPEC, {"NUM_SEEDS": 2, "PROGRESS": False}, cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="one seed per process, so DISTRIBUTED must be off"):
        run_experiment(pqn_atari.SPEC, {"DISTRIBUTED": True, "PROGRESS": False}, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()   # nothing half-written
    monkeypatch.setitem(sys.modules, "envpool", None)   # as if the extra were not installed
    with pytest.raises(ConfigError, match=r'Pong-v5 needs the atari extra.*pip install -e "\.\[atari\]"'):
        make_env({"ENV_NAME": "Pong-v5"})


def test_pqn_atari_trains_at_toy_sizes():
    cfg = {**shipped("pqn_atari"), "NUM_ENVS": 4, "NUM_STEPS": 8, "TOTAL_TIMESTEPS": 4 * 8 * 3, "NUM_EPOCHS": 1,
           "NUM_MINIBATCHES": 2, "AGENT_HIDDEN_DIM": 32, "TEST_NUM_ENVS": 2, "TEST_NUM_STEPS": None,
           "TEST_INTERVAL": 0.5, "EPSILON_ANNEAL_TIME": 48}
    cfg["ENV_KWARGS"] = {**cfg["ENV_KWARGS"], "max_episode_steps": 20}   # evaluation games end by the limit
    env = make_env(cfg)
    out = jax.jit(pqn_atari.make_train(cfg, env))(jax.random.PRNGKey(0))
    m = {k: np.asarray(v) for k, v in out["metrics"].items()}
    assert np.isfinite(m["loss"]).all() and m["grad_steps"][-1] == 3 * cfg["NUM_MINIBATCHES"]
    assert np.isfinite(m["test_returned_episode_returns"][-1])   # the evaluation's games ended and scored
    assert out["runner_state"].train.params["agent"]["params"]["Conv_0"]["kernel"].shape == (8, 8, 4, 32)
