"""Level-Based Foraging and Robot Warehouse through Jumanji (purejaxql.jumanji_env): the program sees exactly the
observations, action masks, rewards and episode ends of Jumanji's own step (auto-reset included), time limits
are told from real ends, agents never take a masked action, QMIX's global state is the agents' observations
joined, EPyMARL's task names build the settings they name, bad input is named, and every module runs on both
(default run: QMIX on LBF; the rest under ``-m slow``).
"""
import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql.config import ConfigError
from purejaxql.environments import CTRolloutManager, env_label, make_env
from purejaxql.jumanji_env import lbf_settings, rware_settings

import jumanji  # noqa: F401  (the jumanji extra is part of the test extra: fail here, not skip, without it)


def reference_run(team, key, steps, seed):
    """Jumanji's own env stepped the plain way (reset after every last step) with random available actions:
    per step the agents' views, masks, rewards, last flags and time-out flags, and the actions taken."""
    env = team._env
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    rng = np.random.default_rng(seed)
    keys = jax.random.split(key, steps + 1)
    state, ts = reset(keys[0])
    out = {"obs": [], "mask": [], "reward": [], "last": [], "timeout": [], "actions": []}
    first_obs, first_mask = np.asarray(ts.observation.agents_view), np.asarray(ts.observation.action_mask)
    for t in range(steps):
        mask = np.asarray(ts.observation.action_mask)
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in mask], np.int32)
        state, ts = step(state, actions)
        last = bool(ts.last())
        reward = np.broadcast_to(np.asarray(ts.reward, np.float32), (team.num_agents,))
        if np.ndim(ts.reward) == 0:   # RWARE's one team reward, split equally
            reward = reward / team.num_agents
        if team.family == "lbf":   # all food eaten is the real end; Jumanji marks a time limit by discount 1
            timeout = last and float(np.asarray(ts.discount).ravel()[0]) > 0
        else:                      # RWARE: two robots on one cell is the real end (Jumanji's collision rule)
            pos = np.stack([np.asarray(state.agents.position.x), np.asarray(state.agents.position.y)], -1)
            collided = len({tuple(p) for p in pos}) < team.num_agents
            timeout = last and not collided
            assert not last or collided or int(state.step_count) >= team.max_steps
        if last:
            state, ts = reset(keys[t + 1])
        out["obs"].append(np.asarray(ts.observation.agents_view, np.float32))
        out["mask"].append(np.asarray(ts.observation.action_mask, np.float32))
        out["reward"].append(np.array(reward, np.float32))
        out["last"].append(last)
        out["timeout"].append(timeout)
        out["actions"].append(actions)
    return first_obs, first_mask, {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("name,task,kwargs,steps,real_ends", [
    ("lbf", "5x5-2p-1f", {"time_limit": 12}, 150, True),          # food eaten and time limits both inside
    pytest.param("lbf", "2s-8x8-3p-2f-coop", {"time_limit": 15}, 60, False,  # partial sight, cooperative food
                 marks=pytest.mark.slow),
    ("rware", "tiny-4ag", {"time_limit": 30}, 120, True),          # collisions and time limits
])
def test_the_program_sees_what_jumanji_gives(name, task, kwargs, steps, real_ends):
    team = make_env({"ENV_NAME": name, "TASK": task, "ENV_KWARGS": kwargs})
    key = jax.random.PRNGKey(3)
    first_obs, first_mask, ref = reference_run(team, key, steps, seed=1)
    keys = jax.random.split(key, steps + 1)

    @jax.jit
    def run(actions):
        obs, state = team.reset(keys[0])

        def step(state, x):
            k, a = x
            obs, state, rew, dones, infos = team.step(k, state, {ag: a[i] for i, ag in enumerate(team.agents)})
            avail = team.get_avail_actions(state)
            return state, (jnp.stack([obs[ag] for ag in team.agents]), jnp.stack([avail[ag] for ag in team.agents]),
                           jnp.stack([rew[ag] for ag in team.agents]), dones["__all__"], infos["truncated"])
        return obs, jax.lax.scan(step, state, (keys[1:], jnp.asarray(actions)))[1]

    obs0, (obs, mask, rew, done, trunc) = run(ref["actions"])
    np.testing.assert_array_equal(np.stack([obs0[a] for a in team.agents]), first_obs.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(obs), ref["obs"])
    np.testing.assert_array_equal(np.asarray(mask), ref["mask"])
    np.testing.assert_allclose(np.asarray(rew), ref["reward"], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(done), ref["last"])
    np.testing.assert_array_equal(np.asarray(trunc), ref["timeout"])
    assert ref["timeout"].any() and (ref["last"] & ~ref["timeout"]).any() == real_ends   # the kinds of end seen
    if real_ends and name == "lbf":
        assert (ref["reward"] > 0).any()


def test_global_state_and_names():
    env = make_env({"ENV_NAME": "lbf", "TASK": "8x8-2p-2f-coop"})
    wrapped = CTRolloutManager(env, 3)
    obs, state = wrapped.batch_reset(jax.random.PRNGKey(0))
    raw = jax.vmap(env._env._observer.state_to_observation)(state.env_state).agents_view   # (3, N, D)
    np.testing.assert_array_equal(np.asarray(obs["__all__"]), np.asarray(raw, np.float32).reshape(3, -1))
    assert obs["agent_0"].shape == (3, 12 + 2)   # 3 x (2 food + 2 agents) features, then the agent id
    assert env_label({"ENV_NAME": "lbf", "TASK": "8x8-2p-2f-coop"}) == "lbf_8x8-2p-2f-coop"
    assert env_label({"ENV_NAME": "rware"}) == "rware_tiny-2ag"


def test_task_names_build_their_settings():
    assert lbf_settings("8x8-2p-2f-coop") == dict(grid_size=8, fov=8, num_agents=2, num_food=2, max_agent_level=2,
                                                  force_coop=True, time_limit=50)
    assert lbf_settings("Foraging-2s-10x10-3p-3f-v3") == dict(grid_size=10, fov=2, num_agents=3, num_food=3,
                                                              max_agent_level=2, force_coop=False, time_limit=50)
    assert lbf_settings("25x25-4p-4f")["time_limit"] == 200
    assert rware_settings("rware-small-4ag-hard-v2") == dict(shelf_rows=2, shelf_columns=3, column_height=8,
                                                             num_agents=4, sensor_range=1, request_queue_size=2,
                                                             time_limit=500)
    env = make_env({"ENV_NAME": "lbf", "TASK": "25x25-4p-4f"})
    assert (env.num_agents, env.num_actions, env.max_steps, env._env.grid_size) == (4, 6, 200, 25)
    env = make_env({"ENV_NAME": "rware", "TASK": "medium-6ag-easy", "ENV_KWARGS": {"time_limit": 100}})
    assert (env.num_agents, env.num_actions, env.max_steps, env._env.request_queue_size) == (6, 5, 100, 12)
    assert env._env.grid_size == (2 * 9 + 2, 5 * 3 + 1)


@pytest.mark.parametrize("cfg,match", [
    ({"ENV_NAME": "lbf", "TASK": "8x9-2p-2f"}, r"unknown lbf TASK '8x9-2p-2f': expected \[<s>s-\]<g>x<g>"),
    ({"ENV_NAME": "rware", "TASK": "huge-2ag"}, r"unknown rware TASK 'huge-2ag': expected <tiny\|small"),
    ({"ENV_NAME": "lbf", "ENV_KWARGS": {"grid": 5}}, r"ENV_KWARGS \['grid'\] are not lbf settings"),
    ({"ENV_NAME": "lbf", "TASK": "6x6-2p-4f"}, r"4 food items and 2 agents do not fit a 6x6 grid"),
    ({"ENV_NAME": "rware", "ENV_KWARGS": {"shelf_columns": 2}}, r"rware: .*shelf_columns.*odd"),
    ({"ENV_NAME": "Snake-v1"}, r"Snake-v1 is a Jumanji environment that purejaxql does not run.*single-agent"),
    ({"ENV_NAME": "rwar"}, r"unknown ENV_NAME 'rwar'; close matches: .*'rware'"),
    ({"ENV_NAME": "LevelBasedForaging-v0", "TASK": "8x8-2p-2f"}, r"takes no TASK.*ENV_NAME=lbf"),
    ({"ENV_NAME": "MPE_simple_spread_v3", "TASK": "tiny-2ag"}, r"TASK 'tiny-2ag' names a task of ENV_NAME lbf"),
])
def test_bad_input_is_named(cfg, match):
    with pytest.raises(ConfigError, match=match):
        make_env(cfg)


def test_missing_jumanji_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jumanji", None)   # import jumanji now raises ImportError
    with pytest.raises(ConfigError, match=r'ENV_NAME rware needs the jumanji extra.*pip install -e "\.\[jumanji\]"'):
        make_env({"ENV_NAME": "rware"})


def tiny_config(module, name, task):
    cfg = {"ENV_NAME": name, "TASK": task, "ENV_KWARGS": {"time_limit": 20}, "NUM_ENVS": 4, "NUM_STEPS": 10,
           "TOTAL_TIMESTEPS": 4 * 10 * 4, "TEST_NUM_ENVS": 4, "TEST_INTERVAL": 0.5, "AGENT_HIDDEN_DIM": 16}
    if module.startswith("pqn"):
        cfg.update(NUM_MINIBATCHES=2, NUM_EPOCHS=1)
    else:
        cfg.update(LEARNING_STARTS=40, BUFFER_SIZE=16, BUFFER_BATCH_SIZE=4, TARGET_UPDATE_INTERVAL=2)
    return cfg


MODULES = [f"{a}_{v}" for a in ("iql", "vdn", "qmix", "qplex", "owqmix", "cwqmix", "qatten", "pqn")
           for v in ("ps", "ns")]
COVER = {("qmix_ps", "lbf")}   # the default suite's budget: RWARE's step runs by default in the test above
SMOKE = [pytest.param(m, e, t, id=f"{m}-{e}", marks=() if (m, e) in COVER else pytest.mark.slow)
         for m in MODULES for e, t in (("lbf", "5x5-2p-1f"), ("rware", "tiny-2ag"))]


@pytest.mark.parametrize("module,name,task", SMOKE)
def test_every_module_runs(module, name, task):
    cfg = tiny_config(module, name, task)
    env = make_env(cfg)
    mod = importlib.import_module(f"purejaxql.{module}")
    out = jax.jit(mod.make_train(cfg, env))(jax.random.PRNGKey(0))
    m = jax.tree.map(np.asarray, out["metrics"])
    assert m["grad_steps"][-1] > 0 and np.isfinite(m["loss"][m["grad_steps"] > 0]).all()
    assert np.isfinite(m["test_returned_episode_returns"]).all()   # 20-step episodes end in every evaluation
    if not module.startswith("pqn"):   # every stored action was available when taken (masks are tight in LBF)
        exp = out["runner_state"].buffer.experience
        avail, actions = np.asarray(exp.avail), np.asarray(exp.actions)
        filled = avail.sum(-1) > 0   # steps written so far (no-op is always available; empty slots are zeros)
        taken = np.take_along_axis(avail, actions[..., None], axis=-1)[..., 0]
        assert filled.any() and (taken[filled] == 1).all()
        if name == "lbf":
            assert (avail[filled] == 0).any()   # some action was masked somewhere


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("module,config,steps", [("qmix_ps", "qmix_lbf", 1e6), ("pqn_ps", "pqn_lbf", 2e6)])
def test_learns_cooperative_foraging(module, config, steps):
    """The shipped LBF configs on 8x8-2p-2f-coop, where both agents must load a food item together: a random
    policy's team return is 0.01 (``bench/random_policy.py lbf --task 8x8-2p-2f-coop``, 1024 episodes); QMIX
    reaches ~0.89 at 1e6 steps and PQN-VDN ~0.9 at 2e6 (one seed each); asserted: 0.6."""
    from test_defaults import shipped
    cfg = {**shipped(config), "TOTAL_TIMESTEPS": steps, "TEST_INTERVAL": 0.1}
    mod = importlib.import_module(f"purejaxql.{module}")
    out = jax.jit(mod.make_train(cfg, make_env(cfg)))(jax.random.PRNGKey(0))
    ret = np.asarray(out["metrics"]["test_returned_episode_returns"])
    assert ret[-1] >= 0.6, ret
