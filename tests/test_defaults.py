"""A notebook user gets the learning the CLI gets: README's notebook config, filled with the defaults, is the
shipped qmix_mpe config key for key (so the same program, hence the same return); time-outs follow the env."""
import ast
import re
from pathlib import Path

import pytest

from envs import EchoGame, TwoStepGame
from purejaxql import pqn_ps, qmix_ps, vdn_ps
from purejaxql.environments import make_env
from purejaxql.spec import SPECS
from shipped import shipped

ROOT = Path(__file__).resolve().parents[1]
ENV_KEYS = ("ENV_NAME", "ENV_KWARGS", "MAP_NAME", "TASK")


def readme_notebook_config(name="config"):
    """The dict literal assigned to ``name`` in README's notebook example."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("### In a notebook"):]
    block = block[block.index("```python"):block.index("```\n", 10)]
    m = re.search(rf"^{name} = (\{{.*?\}})\n", block, re.S | re.M)
    return ast.literal_eval(m.group(1))


def without_env_keys(cfg):
    return {k: v for k, v in cfg.items() if k not in ENV_KEYS}


def test_readme_notebook_config_is_the_shipped_qmix_mpe_config():
    env = make_env({"ENV_NAME": "MPE_simple_spread_v3"})
    notebook = qmix_ps.make_train(readme_notebook_config(), env).config
    cli = qmix_ps.make_train(shipped("qmix_mpe"), env).config
    assert without_env_keys(notebook) == without_env_keys(cli)
    # the two keys a notebook user used not to know about
    assert notebook["LR_LINEAR_DECAY"] is True and notebook["TIMEOUT_AS_TERMINAL"] is False


@pytest.mark.parametrize("env_cfg,want", [
    ({"ENV_NAME": "MPE_simple_spread_v3"}, False),
    ({"ENV_NAME": "MPE_simple_tag_v3"}, False),
    ({"ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "3m"}, False),
    ("two_step", True),   # its episode ends are terminal states
    ("echo", False),      # declares time_limit_truncates
])
def test_time_outs_follow_the_env_unless_set(env_cfg, want):
    env = {"two_step": TwoStepGame, "echo": EchoGame}[env_cfg]() if isinstance(env_cfg, str) else make_env(env_cfg)
    base = {"NUM_STEPS": 2, "TOTAL_TIMESTEPS": 1e4, "LEARNING_STARTS": 0}
    assert vdn_ps.make_train(base, env).config["TIMEOUT_AS_TERMINAL"] is want
    assert pqn_ps.make_train({"NUM_STEPS": 2, "NUM_ENVS": 16, "NUM_MINIBATCHES": 2}, env).config[
        "TIMEOUT_AS_TERMINAL"] is want
    for given in (True, False):  # a value set by the user wins
        assert vdn_ps.make_train({**base, "TIMEOUT_AS_TERMINAL": given}, env).config["TIMEOUT_AS_TERMINAL"] is given


SHIPPED = sorted(p.stem for p in (ROOT / "config" / "alg").glob("*.yaml") if not p.stem.endswith("_pretrained"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_is_valid_for_its_algorithm(name):
    """Each shipped alg config resolves with its algorithm (keys known, values in range) on its env; the
    CPU-sized SMAX configs set the same keys as the GPU-sized ones they sit beside."""
    cfg = shipped(name)
    spec = SPECS[name.split("_")[0] + "_ps"]
    resolved = spec.make_train(without_env_keys(cfg), make_env(cfg)).config
    assert resolved["NUM_UPDATES"] >= 1
    if name.endswith("_cpu"):
        assert set(cfg) == set(shipped(name[:-len("_cpu")]))
        assert resolved["AGENT_HIDDEN_DIM"] <= 64 and resolved["NUM_EPOCHS"] == 1
