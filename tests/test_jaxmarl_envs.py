"""JaxMARL's other discrete environments: Hanabi (legal moves as the available actions), Coin Game, Switch Riddle,
JaxNav (its discrete action set by default) and STORM's three versions (through purejaxql.storm_env) train with
every module at tiny budgets, every stored action legal under the env's own mask (``-m slow``); STORM's adapter
shows the game's own observations, rewards and episode ends; environments that cannot run say why (a missing
package, a constructor argument missing).
"""
import importlib

import jax
import numpy as np
import pytest

from purejaxql.config import ConfigError
from purejaxql.environments import make_env

ENVS = {"hanabi": 30, "coin_game": 100, "switch_riddle": 6, "jaxnav": 30,   # env -> evaluation steps
        "storm": 20, "storm_2p": 20, "storm_np": 20}
MODULES = [f"{a}_{v}" for a in ("iql", "vdn", "qmix", "pqn") for v in ("ps", "ns")]
# the default run trains one module on each of five envs (every algorithm and both variants among them, ~10 s
# each); the rest of the matrix (20-30 s of compile each) is under slow
DEFAULT = {("hanabi", "pqn_ps"), ("storm_2p", "qmix_ps"), ("jaxnav", "pqn_ns"), ("coin_game", "iql_ps"),
           ("switch_riddle", "vdn_ns")}
CASES = [pytest.param(e, m, id=f"{e}-{m}", marks=() if (e, m) in DEFAULT else pytest.mark.slow)
         for e in ENVS for m in MODULES]


@pytest.mark.parametrize("name,module", CASES)
def test_trains_with_legal_actions(name, module):
    cfg = {"ENV_NAME": name, "NUM_ENVS": 2, "NUM_STEPS": 6, "TOTAL_TIMESTEPS": 2 * 6 * 4, "AGENT_HIDDEN_DIM": 8,
           "TEST_NUM_ENVS": 2, "TEST_INTERVAL": 0.5, "TEST_NUM_STEPS": ENVS[name]}
    if name.startswith("storm"):   # image observations: convolutional agents
        cfg.update(AGENT_TYPE="cnn", CNN_CHANNELS=[4], CNN_KERNEL_SIZES=[3])
    if module.startswith("pqn"):
        cfg.update(NUM_MINIBATCHES=2, NUM_EPOCHS=1)
    else:
        cfg.update(LEARNING_STARTS=0, BUFFER_SIZE=8, BUFFER_BATCH_SIZE=2, TARGET_UPDATE_INTERVAL=1)
    env = make_env(cfg)
    out = jax.jit(importlib.import_module(f"purejaxql.{module}").make_train(cfg, env))(jax.random.PRNGKey(0))
    m = jax.tree.map(np.asarray, out["metrics"])
    assert m["grad_steps"][-1] > 0 and np.isfinite(m["loss"][m["grad_steps"] > 0]).all()
    if not module.startswith("pqn"):
        exp = out["runner_state"].buffer.experience
        avail, actions = np.asarray(exp.avail), np.asarray(exp.actions)
        filled = avail.sum(-1) > 0
        taken = np.take_along_axis(avail, actions[..., None], axis=-1)[..., 0]
        assert filled.any() and (taken[filled] == 1).all()
        if name in ("hanabi", "jaxnav"):
            assert (avail[filled] == 0).any()   # the env's own mask, not all actions


def test_env_specifics():
    assert make_env({"ENV_NAME": "coin_game", "ENV_KWARGS": {"num_inner_steps": 5, "num_outer_steps": 3}}).max_steps \
        == 15
    assert make_env({"ENV_NAME": "jaxnav"}).action_space("agent_0").n == 15   # the discrete set, not a Box


@pytest.mark.parametrize("name,match", [
    ("storm_np", r"ENV_NAME storm_np cannot be built from ENV_KWARGS \['no_such_key'\]"),
    ("ant_4x2", r"ant_4x2 needs a package that is not installed: .*brax"),
    ("JaxRobotarium_navigation", r"JaxRobotarium_navigation: .*requires the jaxrobotarium package"),
    ("LearnedPolicyEnemySMAX", r"LearnedPolicyEnemySMAX cannot be built from ENV_KWARGS \['scenario'\]: .*policy"),
])
def test_what_cannot_run_says_why(name, match):
    with pytest.raises(ConfigError, match=match):
        make_env({"ENV_NAME": name, "ENV_KWARGS": {"no_such_key": 1} if name == "storm_np" else {}})


def _storm_views(name, raw, n):
    """The game's own observation at one step -> per agent (image, inventory or None)."""
    if name == "storm_2p":
        return [(o["observation"], o["inventory"]) for o in raw]
    if name == "storm":
        return [(raw["observations"][i], raw["inventory"][:, i]) for i in range(n)]
    return [(raw[i], None) for i in range(n)]


@pytest.mark.parametrize("name", ["storm", "storm_2p", pytest.param("storm_np", marks=pytest.mark.slow)])
def test_storm_adapter_shows_the_games_own_step(name):
    """Each agent's (H, W, C + K) image is its own grid view with its K inventory features as constant planes;
    rewards per agent and the episode end are the game's, the end at the horizon is a time-out; over two
    episodes of random actions (the game's auto-reset included), key for key."""
    import jaxmarl
    env = make_env({"ENV_NAME": name, "ENV_KWARGS": {"num_inner_steps": 8, "num_outer_steps": 2}})
    game = jaxmarl.make(name, num_inner_steps=8, num_outer_steps=2)
    assert env.max_steps == 16 and env.agents == ["agent_0", "agent_1"]
    n_act = env.action_space("agent_0").n

    @jax.jit
    def both(key):   # one program: both envs stepped with the same keys and actions
        def body(carry, key):
            state, raw_state = carry
            k_act, k_step = jax.random.split(key)
            acts = jax.random.randint(k_act, (2,), 0, n_act)
            obs, state, rew, dones, infos = env.step(k_step, state, {"agent_0": acts[0], "agent_1": acts[1]})
            raw, raw_state, raw_rew, raw_dones, _ = game.step(k_step, raw_state, acts)
            raw_rew = jax.numpy.stack([jax.numpy.asarray(r, jax.numpy.float32) for r in raw_rew])
            return (state, raw_state), (obs, rew, dones, infos, raw, raw_rew, raw_dones["__all__"])
        return jax.lax.scan(body, (env.reset(key)[1], game.reset(key)[1]), jax.random.split(key, 2 * env.max_steps))[1]

    obs, rew, dones, infos, raw, raw_rew, raw_done = jax.tree.map(np.asarray, both(jax.random.PRNGKey(3)))
    for t in range(2 * env.max_steps):
        views = _storm_views(name, jax.tree.map(lambda x: x[t], raw), 2)
        for a, (img, inv) in zip(env.agents, views):
            o, c = obs[a][t], img.shape[-1]
            assert o.shape == env.observation_space(a).shape and o.dtype == np.float32
            np.testing.assert_array_equal(o[..., :c], img.astype(np.float32))
            if inv is None:
                assert o.shape[-1] == c
            else:
                np.testing.assert_array_equal(o[..., c:], np.broadcast_to(inv.astype(np.float32),
                                                                          o.shape[:2] + (len(inv),)))
        np.testing.assert_array_equal([rew[a][t] for a in env.agents], raw_rew[t])
        assert dones["__all__"][t] == raw_done[t] == dones["agent_1"][t] == infos["truncated"][t]
        assert raw_done[t] == ((t + 1) % env.max_steps == 0)
