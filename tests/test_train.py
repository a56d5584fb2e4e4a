"""make_train contract: notebook usage, outputs, config checking, determinism, seeds, chunked runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl import make

from purejaxql import qmix_ps, vdn_ps
from purejaxql.config import ConfigError
from purejaxql.environments import make_env

METRICS = {"env_step", "update_steps", "grad_steps", "loss", "qvals", "epsilon",
           "returned_episode_returns", "test_returned_episode_returns",
           "test_returned_episode_returns_std"}


def notebook_config(env):
    # the documented notebook config, with a tiny budget (and a target sync that fits in it)
    return {"NUM_ENVS": 8, "NUM_STEPS": env.max_steps, "BUFFER_SIZE": 5000, "BUFFER_BATCH_SIZE": 32,
            "TOTAL_TIMESTEPS": 8 * 25 * 12, "AGENT_HIDDEN_DIM": 64, "EPSILON_START": 1.0,
            "EPSILON_FINISH": 0.05, "EPSILON_ANNEAL_TIME": 100000, "MAX_GRAD_NORM": 10,
            "TARGET_UPDATE_INTERVAL": 4, "LR": 0.005, "GAMMA": 0.99, "DEBUG": False,
            "LEARNING_STARTS": 400, "TEST_NUM_ENVS": 16, "TEST_INTERVAL": 0.25}


@pytest.fixture(scope="module")
def mpe():
    env = make("MPE_simple_spread_v3")
    train = vdn_ps.make_train(notebook_config(env), env)
    return env, train


@pytest.fixture(scope="module")
def solo_outs(mpe):
    _, train = mpe
    f = jax.jit(train)
    return f, f(jax.random.PRNGKey(42))


def test_notebook_usage_and_output_contract(mpe, solo_outs):
    _, train = mpe
    _, outs = solo_outs
    assert set(outs["metrics"]) == METRICS
    n = train.config["NUM_UPDATES"]
    assert n == 12
    for k, v in outs["metrics"].items():
        assert v.shape == (n,), k
    m = jax.tree.map(np.asarray, outs["metrics"])
    np.testing.assert_array_equal(m["env_step"], np.arange(1, n + 1) * 8 * 25)
    np.testing.assert_array_equal(m["update_steps"], np.arange(1, n + 1))
    # learning starts after 400 env steps and needs two stored chunks: updates 2.. do one grad step
    np.testing.assert_array_equal(m["grad_steps"], np.maximum(np.arange(1, n + 1) - 2, 0))
    assert np.isnan(m["loss"][:2]).all() and np.isfinite(m["loss"][2:]).all()
    assert np.all(np.isfinite(m["test_returned_episode_returns"]))
    assert np.all(m["test_returned_episode_returns"] < 0)  # simple_spread pays negative rewards
    train_state = outs["runner_state"].train
    assert set(train_state.params) == {"agent", "mixer"}
    assert int(train_state.grad_steps) == 10


def test_same_seed_gives_identical_metrics(solo_outs):
    f, outs = solo_outs
    again = f(jax.random.PRNGKey(42))
    for k in METRICS:
        np.testing.assert_array_equal(outs["metrics"][k], again["metrics"][k], err_msg=k)


def test_vmapped_seed_equals_solo_run_and_chunked_run_equals_one_program(mpe, solo_outs):
    _, train = mpe
    _, solo = solo_outs
    keys = jnp.stack([jax.random.PRNGKey(7), jax.random.PRNGKey(42)])
    batched = jax.jit(jax.vmap(train))(keys)
    for k in METRICS:
        np.testing.assert_allclose(batched["metrics"][k][1], solo["metrics"][k], rtol=1e-5, atol=1e-5,
                                   err_msg=k)
    # the CLI's path: init, then chunks of updates, carrying the whole state
    runner = jax.jit(train.init)(jax.random.PRNGKey(42))
    run = jax.jit(train.run)
    parts = []
    for start in range(0, 12, 4):
        runner, m = run(runner, jnp.arange(start, start + 4))
        parts.append(m)
    for k in METRICS:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), solo["metrics"][k], err_msg=k)


def test_unknown_and_bad_keys_are_named(mpe):
    env, _ = mpe
    cfg = notebook_config(env)
    with pytest.raises(ConfigError, match="'LR_DECAY'.*did you mean 'LR_LINEAR_DECAY'"):
        vdn_ps.make_train({**cfg, "LR_DECAY": True}, env)
    with pytest.raises(ConfigError, match="MIXER_EMBEDDING_DIM.*qmix"):
        vdn_ps.make_train({**cfg, "MIXER_EMBEDDING_DIM": 8}, env)
    with pytest.raises(ConfigError, match="GAMMA"):
        vdn_ps.make_train({**cfg, "GAMMA": 1.5}, env)
    with pytest.raises(ConfigError, match="BUFFER_BATCH_SIZE"):
        vdn_ps.make_train({**cfg, "BUFFER_SIZE": 20}, env)
    with pytest.raises(ConfigError, match="two sequences per env"):
        vdn_ps.make_train({**cfg, "BUFFER_SIZE": 8, "BUFFER_BATCH_SIZE": 4}, env)
    with pytest.raises(ConfigError, match="LEARNING_STARTS"):
        vdn_ps.make_train({**cfg, "LEARNING_STARTS": 1e6}, env)
    with pytest.raises(ConfigError, match="MAX_GRAD_NORM"):
        vdn_ps.make_train({**cfg, "MAX_GRAD_NORM": -1}, env)
    with pytest.raises(ConfigError, match="LR_LINEAR_DECAY must be True or False"):
        vdn_ps.make_train({**cfg, "LR_LINEAR_DECAY": "False"}, env)
    with pytest.raises(ConfigError, match="LR must be a number"):
        vdn_ps.make_train({**cfg, "LR": "fast"}, env)
    with pytest.raises(ConfigError, match="smaller than one rollout"):
        vdn_ps.make_train({**cfg, "TOTAL_TIMESTEPS": 10}, env)


def test_defaults_fill_every_key(mpe):
    env, _ = mpe
    train = qmix_ps.make_train({"TOTAL_TIMESTEPS": 2e5}, env)
    cfg = train.config
    assert cfg["NUM_STEPS"] == env.max_steps and cfg["TEST_NUM_STEPS"] == env.max_steps + 1
    assert cfg["MIXER_EMBEDDING_DIM"] == 32 and cfg["EPSILON_ANNEAL_TIME"] == 2e4


@pytest.mark.timeout(400)
def test_smax_mixed_units_reports_wins(capfd):
    env = make_env({"ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "2s3z"})
    cfg = dict(NUM_ENVS=4, NUM_STEPS=16, TOTAL_TIMESTEPS=4 * 16 * 4, BUFFER_SIZE=64, BUFFER_BATCH_SIZE=4,
               AGENT_HIDDEN_DIM=16, LEARNING_STARTS=0, TEST_NUM_ENVS=4, TEST_INTERVAL=0.5,
               TARGET_UPDATE_INTERVAL=2,
               MIXER_EMBEDDING_DIM=8, MIXER_HYPERNET_HIDDEN_DIM=16, DEBUG=True)
    outs = jax.jit(qmix_ps.make_train(cfg, env))(jax.random.PRNGKey(0))
    jax.block_until_ready(outs)
    printed = capfd.readouterr().out
    assert printed.count("test_returned_won_episode=") == 3  # DEBUG: a line per evaluation (0, 2, 3)
    m = outs["metrics"]
    assert {"returned_won_episode", "test_returned_won_episode"} <= set(m)
    won = np.asarray(m["test_returned_won_episode"])
    assert np.all((won >= 0) & (won <= 1))
    assert np.all(np.isfinite(np.asarray(m["loss"])[1:]))
