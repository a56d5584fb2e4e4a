"""JaxMARL's other discrete environments: Hanabi (legal moves as the available actions), Coin Game, Switch Riddle
and JaxNav (its discrete action set by default) train with every module at tiny budgets, every stored action
legal under the env's own mask (``-m slow``); environments that cannot run say why (STORM's observation layout,
a missing package, a constructor argument missing).
"""
import importlib

import jax
import numpy as np
import pytest

from purejaxql.config import ConfigError
from purejaxql.environments import make_env

ENVS = {"hanabi": 30, "coin_game": 100, "switch_riddle": 6, "jaxnav": 30}   # env -> evaluation steps
MODULES = [f"{a}_{v}" for a in ("iql", "vdn", "qmix", "pqn") for v in ("ps", "ns")]
# every run is under slow (20-30 s of compile each did not fit the default suite's budget); the default run
# keeps Hanabi's mask (tests/test_wrapper.py) and the checks below
CASES = [pytest.param(e, m, id=f"{e}-{m}", marks=pytest.mark.slow) for e in ENVS for m in MODULES]


@pytest.mark.parametrize("name,module", CASES)
def test_trains_with_legal_actions(name, module):
    cfg = {"ENV_NAME": name, "NUM_ENVS": 2, "NUM_STEPS": 6, "TOTAL_TIMESTEPS": 2 * 6 * 4, "AGENT_HIDDEN_DIM": 8,
           "TEST_NUM_ENVS": 2, "TEST_INTERVAL": 0.5, "TEST_NUM_STEPS": ENVS[name]}
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
    ("storm", r"storm \(STORM\) is not supported yet: its observations are not keyed by agent"),
    ("ant_4x2", r"ant_4x2 needs a package that is not installed: .*brax"),
    ("JaxRobotarium_navigation", r"JaxRobotarium_navigation: .*requires the jaxrobotarium package"),
    ("LearnedPolicyEnemySMAX", r"LearnedPolicyEnemySMAX cannot be built from ENV_KWARGS \['scenario'\]: .*policy"),
])
def test_what_cannot_run_says_why(name, match):
    with pytest.raises(ConfigError, match=match):
        make_env({"ENV_NAME": name})
