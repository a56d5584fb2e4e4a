"""Craftax as a team of one (purejaxql.craftax_env) and Batch Renormalisation (purejaxql.batch_renorm).

The adapter's unbatched step is Craftax's own auto-resetting step (same keys, same worlds), its batched step
builds only B / optimistic_reset_ratio worlds and hands them out in the order the episodes ended, the time
limit is told apart from a real ending, a missing craftax install is named, and the two shipped Craftax
commands train at toy sizes (pqn_craftax on Craftax-Classic-Symbolic; pqn_rnn_craftax on Craftax-Symbolic
itself in the slow suite).
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql import pqn_craftax, pqn_rnn_craftax
from purejaxql.batch_renorm import BatchRenorm
from purejaxql.config import ConfigError
from purejaxql.environments import CTRolloutManager, make_env
from test_defaults import shipped

CLASSIC = "Craftax-Classic-Symbolic-v1"


def leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_unbatched_step_is_craftax_own_auto_reset_step():
    from craftax.craftax_env import make_craftax_env_from_name
    team = make_env({"ENV_NAME": CLASSIC, "ENV_KWARGS": {"max_timesteps": 7}})
    own = make_craftax_env_from_name(CLASSIC, auto_reset=True)
    params = own.default_params.replace(max_timesteps=7)

    def run(key):
        o_a, s_a = team.reset(key)
        o_b, s_b = own.reset(key, params)

        def step(c, k):
            s_a, s_b = c
            k_act, k_env = jax.random.split(k)
            a = jax.random.randint(k_act, (), 0, team.action_space().n)
            o_a, s_a, r_a, d_a, info = team.step(k_env, s_a, {"agent_0": a})
            o_b, s_b, r_b, d_b, _ = own.step(k_env, s_b, a, params)
            return (s_a, s_b), (o_a["agent_0"], o_b, r_a["agent_0"], r_b, d_a["__all__"], d_b, info["truncated"])
        return o_a["agent_0"], o_b, jax.lax.scan(step, (s_a, s_b), jax.random.split(key, 20))[1]

    o_a, o_b, (obs_a, obs_b, r_a, r_b, d_a, d_b, trunc) = jax.jit(run)(jax.random.PRNGKey(0))
    # the same numbers up to float rounding (XLA fuses the two programs differently)
    np.testing.assert_allclose(o_a, o_b, atol=1e-6)
    np.testing.assert_allclose(obs_a, obs_b, atol=1e-6)   # the same worlds after each reset too
    np.testing.assert_allclose(r_a, r_b, atol=1e-6)
    np.testing.assert_array_equal(d_a, d_b)
    assert d_a.sum() >= 2                            # episodes ended (and restarted) inside the 20 steps
    assert not (trunc & ~d_a).any()
    assert team.max_steps == 7 and team.observation_space().shape == (1345,) and team.action_space().n == 17


def _batch_with_some_at_the_limit(ratio, limit=5):
    """8 envs, those at even positions one step from the time limit, env 6 also dead (health 0: a real
    ending on the last allowed step); one batched step of action 0 (noop)."""
    team = make_env({"ENV_NAME": CLASSIC, "ENV_KWARGS": {"max_timesteps": limit, "optimistic_reset_ratio": ratio}})
    wrapped = CTRolloutManager(team, 8, add_agent_id=False)
    _, states = wrapped.batch_reset(jax.random.PRNGKey(1))
    at_limit = jnp.arange(8) % 2 == 0
    dead = jnp.arange(8) == 6
    states = states.replace(timestep=jnp.where(at_limit, limit - 1, 0),
                            player_health=jnp.where(dead, jnp.zeros_like(states.player_health), states.player_health))
    actions = {"agent_0": jnp.zeros(8, jnp.int32)}
    out = jax.jit(wrapped.batch_step)(jax.random.PRNGKey(2), states, actions)
    k_step, k_reset = jax.random.split(jax.random.PRNGKey(2))
    stepped = jax.jit(jax.vmap(team._step_one))(jax.random.split(k_step, 8), states, actions["agent_0"])
    fresh = jax.jit(jax.vmap(team._reset_one))(jax.random.split(k_reset, max(1, 8 // ratio)))[1]
    return team, at_limit, out, stepped, fresh


def test_batched_step_hands_out_fresh_worlds_in_the_order_episodes_ended():
    _, at_limit, (obs, states, rew, dones, infos), stepped, fresh = _batch_with_some_at_the_limit(ratio=4)
    done = np.asarray(dones["__all__"])
    np.testing.assert_array_equal(done, np.asarray(at_limit))
    # the time limit, not a real end; env 6 died on its last allowed step: a real end wins
    np.testing.assert_array_equal(np.asarray(infos["truncated"]), done & (np.arange(8) != 6))
    np.testing.assert_array_equal(np.asarray(states.timestep), np.where(done, 0, 1))
    maps = np.asarray(states.map)
    # 8 // 4 = 2 fresh worlds: the 1st and 3rd finished envs (0, 4) share world 0, the 2nd and 4th (2, 6) world 1
    worlds = np.asarray(fresh.map)
    assert worlds.shape[0] == 2 and not np.array_equal(worlds[0], worlds[1])
    for env_index, world in ((0, 0), (2, 1), (4, 0), (6, 1)):
        np.testing.assert_array_equal(maps[env_index], worlds[world])
    # envs still playing keep the state their step gave (no reset leaks into them)
    for i in (1, 3, 5, 7):
        assert leaves_equal(jax.tree.map(lambda x: x[i], states), jax.tree.map(lambda x: x[i], stepped[1]))
        np.testing.assert_array_equal(np.asarray(obs["agent_0"][i]), np.asarray(stepped[0][i]))
    assert not np.array_equal(maps[0], np.asarray(stepped[1].map)[0])  # a finished env left its old world


@pytest.mark.slow
def test_optimistic_reset_ratio_one_gives_every_finished_env_its_own_world():
    _, _, (_, states, _, dones, _), _, _ = _batch_with_some_at_the_limit(ratio=1)
    maps = np.asarray(states.map)
    finished = [i for i in range(8) if dones["__all__"][i]]
    assert len({maps[i].tobytes() for i in finished}) == len(finished) == 4


def test_bad_craftax_input_is_named(monkeypatch):
    with pytest.raises(ConfigError, match="close matches: .*'Craftax-Symbolic-v1'"):
        make_env({"ENV_NAME": "Craftax-Symbolc-v1"})
    with pytest.raises(ConfigError, match=r"ENV_KWARGS \['max_step'\] are not EnvParams fields"):
        make_env({"ENV_NAME": CLASSIC, "ENV_KWARGS": {"max_step": 3}})
    with pytest.raises(ConfigError, match="optimistic_reset_ratio must be >= 1"):
        make_env({"ENV_NAME": CLASSIC, "ENV_KWARGS": {"optimistic_reset_ratio": 0}})
    for mod in [m for m in sys.modules if m == "craftax" or m.startswith("craftax.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "craftax", None)   # as if the extra were not installed
    with pytest.raises(ConfigError, match=r'needs the craftax extra.*pip install -e "\.\[craftax\]"'):
        make_env({"ENV_NAME": "Craftax-Symbolic-v1"})


# ---- Batch Renormalisation ---------------------------------------------------------------------------------

def renorm_by_hand(x, mean, var, warm, m=0.999, eps=1e-3, r_max=3.0, d_max=5.0):
    mu_b, var_b = x.mean(0), x.var(0)
    sigma_b, sigma = np.sqrt(var_b + eps), np.sqrt(var + eps)
    r = 1.0 if warm else np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = 0.0 if warm else np.clip((mu_b - mean) / sigma, -d_max, d_max)
    return (x - mu_b) / sigma_b * r + d, mean + (1 - m) * (mu_b - mean), var + (1 - m) * (var_b - var)


def test_batch_renorm_matches_the_formula_in_training_and_in_evaluation():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 4.0, (64, 5)).astype(np.float32)
    module = BatchRenorm(warmup_steps=2, momentum=0.9)
    variables = module.init(jax.random.PRNGKey(0), x)
    mean, var = np.zeros(5, np.float32), np.ones(5, np.float32)
    for step in range(4):   # two warm-up calls (plain BatchNorm), then the clipped corrections
        y, new = module.apply(variables, x, mutable=["batch_stats"])
        want, mean, var = renorm_by_hand(x, mean, var, warm=step < 2, m=0.9)
        np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)
        stats = new["batch_stats"]
        np.testing.assert_allclose(np.asarray(stats["mean"]), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(stats["var"]), var, rtol=1e-5, atol=1e-6)
        assert int(stats["steps"]) == step + 1
        variables = {**variables, "batch_stats": stats}
    # after warm-up the output is no longer plain BatchNorm: the running stats (far from the batch's) pull it
    assert not np.allclose(np.asarray(y), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), atol=1e-2)
    y_eval = BatchRenorm(use_running_average=True).apply(variables, x)
    np.testing.assert_allclose(np.asarray(y_eval), (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
    assert (BatchRenorm.momentum, BatchRenorm.warmup_steps) == (0.999, 1000)   # the original PQN code's constants


def test_batch_renorm_passes_no_gradient_through_its_corrections():
    """The gradient of a weighted sum of the outputs equals that of the formula with r and d fixed at their
    values (running statistics far from the batch's, so both corrections are active and clipped)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(2.0, 3.0, (32, 3)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    module = BatchRenorm(warmup_steps=0)
    variables = module.init(jax.random.PRNGKey(0), x)
    variables = {**variables, "batch_stats": {**variables["batch_stats"], "mean": jnp.full(3, 0.5),
                                              "var": jnp.full(3, 4.0)}}
    g = jax.grad(lambda x: (c * module.apply(variables, x, mutable=["batch_stats"])[0]).sum())(x)
    sigma_b = np.sqrt(np.asarray(x).var(0) + 1e-3)
    r = np.clip(sigma_b / np.sqrt(4.0 + 1e-3), 1 / 3, 3)
    d = np.clip((np.asarray(x).mean(0) - 0.5) / np.sqrt(4.0 + 1e-3), -5, 5)
    assert not np.allclose(r, 1.0) and not np.allclose(d, 0.0)

    def fixed(x):   # the formula with r and d as constants
        mu, sig = x.mean(0), jnp.sqrt(x.var(0) + 1e-3)
        return (c * ((x - mu) / sig * r + d)).sum()
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(fixed)(x)), rtol=1e-4, atol=1e-5)


# ---- the shipped commands ----------------------------------------------------------------------------------

def toy(config, **extra):
    cfg = {**shipped(config), "ENV_NAME": CLASSIC, "NUM_ENVS": 8, "TOTAL_TIMESTEPS": 8 * 4 * 3,
           "AGENT_HIDDEN_DIM": 32, "NUM_EPOCHS": 1, "EPSILON_ANNEAL_TIME": 48, "TEST_DURING_TRAINING": True,
           "TEST_NUM_ENVS": 4, "TEST_NUM_STEPS": 40, "TEST_INTERVAL": 0.5, **extra}
    cfg["ENV_KWARGS"] = {"optimistic_reset_ratio": 4, "max_timesteps": 30}
    return cfg


@pytest.mark.parametrize("module,config,extra", [
    pytest.param(pqn_craftax, "pqn_craftax", {"NUM_STEPS": 4}, marks=pytest.mark.slow),
    pytest.param(pqn_rnn_craftax, "pqn_rnn_craftax", {"NUM_STEPS": 4, "NUM_MINIBATCHES": 2,
                                                      "ENV_NAME": "Craftax-Symbolic-v1"}, marks=pytest.mark.slow)])
def test_shipped_craftax_commands_train_and_evaluate(module, config, extra):
    cfg = toy(config, **extra)
    env = make_env(cfg)
    out = jax.jit(module.make_train(cfg, env))(jax.random.PRNGKey(0))
    m = {k: np.asarray(v) for k, v in out["metrics"].items()}
    assert np.isfinite(m["loss"]).all() and m["grad_steps"][-1] == 3 * cfg["NUM_MINIBATCHES"]
    # every test episode ends at the 30-step limit inside the 40 evaluation steps
    assert np.isfinite(m["test_returned_episode_returns"][-1])
    # Batch Renorm on the input (LayerNorm on the hidden layers): its statistics moved once per gradient step
    stats = out["runner_state"].train.params["agent"]["batch_stats"]
    assert set(stats) == {"input_norm"} and int(stats["input_norm"]["steps"]) == 3 * cfg["NUM_MINIBATCHES"]
