"""The shipped alg configs, as the CLI composes them or through the CLI itself, for tests."""
import os
import subprocess
import sys

from purejaxql.cli import compose


def shipped(name, **overrides):
    """The shipped alg config ``name`` as the CLI composes it (``+alg=<name>``, bases in config/alg/base/),
    without its TUNE block, with ``overrides`` on top."""
    cfg = compose([f"+alg={name}"])["alg"]
    cfg.pop("TUNE", None)
    return {**cfg, **overrides}


def cli(module, *args, cwd, default_xla_level=False, timeout=500):
    """``python -m purejaxql.<module> args`` in ``cwd`` (wandb left to the CLI's defaults);
    ``default_xla_level``: without conftest's --xla_backend_optimization_level=0 (XLA's default optimisation
    level, as users run; convolutional agents train ~10x slower at level 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    if default_xla_level:
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                    if "xla_backend_optimization_level" not in f)
    return subprocess.run([sys.executable, "-m", f"purejaxql.{module}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
