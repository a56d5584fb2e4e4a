"""Short runs of the shipped configs: a target network that is never synced is a one-line warning, not a
refusal; what cannot run at all (no update to learn in) is still refused. README's smoke command runs."""
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import jaxmarl  # noqa: F401  (imported before capsys starts: importing it replaces sys.stderr)
import pytest

from purejaxql import config as config_module
from purejaxql.config import ConfigError
from purejaxql.environments import make_env
from shipped import shipped

README = Path(__file__).resolve().parent.parent / "README.md"
WARNING = "purejaxql: warning: TARGET_UPDATE_INTERVAL (200) exceeds the number of updates (144)"


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget the warnings this process has already shown."""
    monkeypatch.setattr(config_module._check_replay, "warned", set(), raising=False)


@pytest.mark.parametrize("alg", ["iql", "vdn", "qmix"])
def test_short_run_of_a_shipped_config_warns_once_on_stderr(alg, fresh_warnings, capsys):
    make_train = importlib.import_module(f"purejaxql.{alg}_ps").make_train
    cfg = shipped(f"{alg}_mpe", TOTAL_TIMESTEPS=3e4)  # 144 updates of 8 x 26 steps; target sync every 200
    env = make_env(cfg)
    train = make_train(cfg, env)
    assert train.config["NUM_UPDATES"] == 144 and train.config["FIRST_LEARN_UPDATE"] == 48
    make_train(cfg, env)  # the CLI resolves the config more than once: still one line
    out, err = capsys.readouterr()
    assert "warning" not in out
    assert err.count("purejaxql: warning:") == 1 and err.count("\n") == 1, err
    assert err.startswith(WARNING) and "never synced" in err


def test_what_cannot_learn_is_still_refused(fresh_warnings, capsys):
    from purejaxql.qmix_ps import make_train
    cfg = shipped("qmix_mpe", TOTAL_TIMESTEPS=1e4)  # 48 updates; learning would start at update 48
    with pytest.raises(ConfigError, match=r"LEARNING_STARTS \(10000\) leaves no update to learn in"):
        make_train(cfg, make_env(cfg))


def readme_smoke_command():
    commands = re.findall(r"python -m purejaxql\.\S+ \+alg=\S+ alg\.TOTAL_TIMESTEPS=3e4", README.read_text())
    assert commands, "README shows no smoke command with alg.TOTAL_TIMESTEPS=3e4"
    return commands[0].split()


def test_readme_smoke_command_uses_a_config_checked_above():
    args = readme_smoke_command()
    assert args[:4] == ["python", "-m", "purejaxql.qmix_ps", "+alg=qmix_mpe"], args


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_smoke_command_runs(tmp_path):
    args = readme_smoke_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    r = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=580)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count(WARNING) == 1, r.stderr[-3000:]
    assert re.search(r"qmix_ps on MPE_simple_spread_v3: final greedy team return -?\d", r.stdout), r.stdout
