"""The command line: ``python -m purejaxql.<module> [+alg=<config>] [KEY=value ...] [alg.KEY=value ...]``.

Hydra composes config/config.yaml (run keys) with an alg config (``alg.*`` keys); the CLI checks the
command line and the composed values before anything heavy loads (a mistake is reported in about a second,
as one ``purejaxql: error: ...`` line and exit code 2), then hands plain dicts to the experiment
(purejaxql.experiment). Also here: the default ``+alg`` of each module, RESUME's pre-check (before hydra
touches the folder), and HYP_TUNE over keys that change the program's shapes, turned into a hydra multirun.
JAX and jaxmarl are imported only inside :func:`cli` once the input is good; this module itself is light.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from purejaxql.config import ALG_KEYS, RUN_KEYS, ConfigError, check_run_keys, resolve_config, unknown_key
from purejaxql.run_folder import TrainingStopped, resume_point
from purejaxql.spec import Spec
from purejaxql.tuning import combine_tune, split_structural

__all__ = ["cli", "available_algs", "precheck_keys", "remove_unused_run_dir", "structural_tune", "compose",
           "CONFIG_PACKAGE"]

CONFIG_PACKAGE = "purejaxql.conf"


def available_algs() -> List[str]:
    """The shipped alg configs (``+alg=<name>``): every yaml directly in config/alg/."""
    return sorted(p.name[:-5] for p in files(CONFIG_PACKAGE).joinpath("alg").iterdir() if p.name.endswith(".yaml"))


def precheck_keys(argv: List[str], alg: str):
    """Catch an unknown key on the command line before hydra starts (and creates a run folder)."""
    alg_keys = ALG_KEYS
    for arg in argv:
        m = re.match(r"^[+~]*(alg\.)?([A-Za-z_][A-Za-z0-9_]*)(?:\.\S*)?=", arg)
        if not m or arg.startswith(("hydra", "+hydra")):
            continue
        key, in_alg = m.group(2), bool(m.group(1))
        if not in_alg and key in ("alg", "hydra"):
            continue
        if not in_alg and key not in RUN_KEYS and key in alg_keys:
            raise ConfigError(f"{key} is an algorithm key: set it as alg.{key}=...")
        known = alg_keys if in_alg else RUN_KEYS
        if key not in known:
            raise unknown_key(key, known, alg) if in_alg else \
                unknown_key(key, known, None, "unknown run key {key!r}{hint} (algorithm keys are set as alg.KEY=...)")


def remove_unused_run_dir(run_dir: Path):
    """A user error before the run wrote anything: remove the folder hydra made for it (only hydra's own
    files inside) and the empty folders above it inside the working directory."""
    try:
        cwd = Path.cwd().resolve()
        if run_dir.resolve() == cwd or run_dir.resolve() in cwd.parents:
            return  # never the working directory or a folder around it
        if any(p.name != ".hydra" and not p.name.endswith(".log") for p in run_dir.iterdir()):
            return
        shutil.rmtree(run_dir)
        parent = run_dir.resolve().parent
        while parent != cwd and cwd in parent.parents:
            parent.rmdir()  # OSError when not empty: stop there
            parent = parent.parent
    except OSError:
        pass


def cli(spec: Spec, argv: Optional[List[str]] = None):
    """Entry point of ``python -m purejaxql.<module>`` for ``spec``: hydra overrides from the command line.
    User errors print one message and exit 2; a run stopped by NAN_CHECK or a full disk exits 4; real bugs
    show their traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # a bug in purejaxql shows its whole traceback
    # hydra's logging set-up lets JAX's INFO lines through ("Unable to initialize backend 'tpu'" on every
    # start without a TPU); JAX's warnings and errors still show
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    user_overrides = [a for a in argv if not a.startswith("-")]
    try:
        argv = with_alg_config(spec, argv)
        precheck_keys(argv, spec.module)
        # a known key the alg config does not list (TD_LAMBDA in qmix_smax, ...) is set like any other
        argv = [re.sub(r"^alg\.([A-Za-z_][A-Za-z0-9_]*)=", r"++alg.\1=", a) for a in argv]
        argv = resume_args(argv)
        argv, sweep, structural = tune_args(argv)
    except ConfigError as e:
        fail(str(e))

    @hydra.main(version_base="1.3", config_path="pkg://" + CONFIG_PACKAGE, config_name="config")
    def _main(cfg):
        flat = OmegaConf.to_container(cfg, resolve=True)
        top, alg_cfg = {k: v for k, v in flat.items() if k != "alg"}, flat.get("alg", {})
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            clash = sorted(set(top) & set(alg_cfg))
            if clash:
                raise ConfigError(f"{clash[0]} is an algorithm key: set it as alg.{clash[0]}=...")
            check_run_keys(top)
            resolve_config(alg_cfg, spec)  # the values a config can be checked on without the env: in ~1 s
            # the heavy part (JAX, jaxmarl, ...) loads only now that the input is known to be good
            from purejaxql.experiment import run_experiment
            run_experiment(spec, top, alg_cfg, run_dir, user_overrides)
        except ConfigError as e:
            if not top.get("RESUME"):
                remove_unused_run_dir(run_dir)
            fail(str(e))
        except TrainingStopped as e:
            fail(f"training stopped: {e}", code=4)

    sys.argv = [sys.argv[0]] + argv
    _main()
    if sweep is not None:
        combine_tune(Path(sweep), list(structural), spec.module)


def fail(message: str, code: int = 2):
    """A user error: one line on stderr, exit ``code``."""
    print(f"purejaxql: error: {message}", file=sys.stderr)
    sys.exit(code)


def with_alg_config(spec: Spec, argv: List[str]) -> List[str]:
    """Check ``+alg=<name>``, or add the module's default config when none is given."""
    names = available_algs()
    chosen = [a for a in argv if a.startswith(("+alg=", "alg="))]
    if not chosen:
        default = spec.default_alg_config
        if not any(a.startswith("RESUME=") for a in argv):
            print(f"purejaxql: no +alg given, using +alg={default} (available: {', '.join(names)})", flush=True)
        return argv + [f"+alg={default}"]
    name = chosen[0].split("=", 1)[1]
    if name not in names:
        raise ConfigError(f"unknown +alg={name}; available: {', '.join(names)}")
    if not name.startswith(spec.algorithm + "_"):  # shipped configs are named <algorithm>_<env>...
        print(f"purejaxql: warning: running {spec.module} with the {name} config", file=sys.stderr)
    return argv


def resume_args(argv: List[str]) -> List[str]:
    """RESUME=<run folder>: check the folder before hydra touches it, and keep hydra's own files out of it."""
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("RESUME=")]
    if not resume or resume[-1] in ("", "null"):
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise ConfigError("RESUME resumes one run; it does not combine with --multirun")
    resume_point(Path(resume[-1]))
    # the run continues in its own folder; hydra adds nothing to it (no .hydra/, no log file)
    return argv + [f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null", "hydra/job_logging=none",
                   "hydra/hydra_logging=none"]


def tune_args(argv: List[str]):
    """HYP_TUNE=True with TUNE keys that change the program's shapes: a hydra multirun over them, one compile
    each (the traceable keys stay vmapped inside each job). -> (argv, sweep folder or None, those keys)."""
    tuning = any(re.match(r"^\+*HYP_TUNE=(true|True)$", a) for a in argv)
    resuming = any(a.startswith("RESUME=") and a.split("=", 1)[1] not in ("", "null") for a in argv)
    if not tuning or resuming or {"-m", "--multirun"} & set(argv):
        return argv, None, {}
    structural = structural_tune(argv)
    if not structural:
        return argv, None, {}
    sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")),
                 time.strftime("multirun/%Y-%m-%d/%H-%M-%S"))
    argv = ["-m", *argv, f"hydra.sweep.dir={sweep}"]
    argv += [f"++alg.{k}={','.join('null' if v is None else str(v) for v in vals)}" for k, vals in structural.items()]
    argv += [f"~alg.TUNE.{k}" for k in structural]
    print(f"purejaxql: HYP_TUNE: {', '.join(structural)} change the program's shapes: hydra multirun over "
          f"them, one compile each, in {sweep}/", flush=True)
    return argv, sweep, structural


def compose(overrides: List[str]) -> Dict[str, Any]:
    """The config the CLI composes for these hydra ``overrides`` (``+alg=qmix_mpe``, ``alg.LR=0.001``, ...), as
    plain dicts: run keys and the ``alg`` block."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides), resolve=True)
    finally:
        GlobalHydra.instance().clear()


def structural_tune(argv: List[str]) -> Dict[str, List[Any]]:
    """The TUNE block of the config this command line composes -> {structural key: values}."""
    overrides = [a for a in argv if ("=" in a or a.startswith("~")) and not a.startswith(("-", "hydra.", "hydra/",
                                                                                          "+hydra"))]
    tune = compose(overrides).get("alg", {}).get("TUNE") or {}
    if not tune:
        raise ConfigError("HYP_TUNE=True needs a TUNE block in the alg config (key: [values] or "
                          "{min, max, num, log}), e.g. '+alg.TUNE.LR=[0.001,0.005]'")
    return split_structural(tune)[1]


