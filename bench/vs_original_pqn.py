"""Single-agent PQN side by side with the original PQN scripts (github mttga/purejaxql), same machine, same
settings, one seed, alternating runs (ours, theirs, ours, theirs, ...), each in a fresh process.

    python bench/vs_original_pqn.py --original DIR --original-python PY [--workloads cartpole minatar]
        [--repeat 3] [--timesteps minatar=5e5]

DIR holds their ``purejaxql/`` package and ``run_purejaxql_anchor.py`` (``../shared/anchors/``: it times
their ``make_train`` for one seed); PY is a Python with their pins (JAX 0.10.2, gymnax 0.0.6, see
``../shared/anchors/README.md``). Ours is timed the same way: ``jax.jit(make_train(config, env))`` lowered and
compiled, then run once; env steps/s = TOTAL_TIMESTEPS / run seconds, so the greedy evaluations both sides
run (TEST_NUM_ENVS 128 every 5 % of updates, up to the env's episode limit) count against both. A budget
below the shipped one scales both sides' ε and LR schedules to it (the original's TOTAL_TIMESTEPS_DECAY).
Workloads (the shipped config, the original's config of the same name):
    cartpole  pqn_gymnax / pqn_cartpole (CartPole-v1, 5e5 steps)
    acrobot   pqn_gymnax / pqn_cartpole with ENV_NAME=Acrobot-v1
    minatar   pqn_minatar / pqn_minatar (Asterix-MinAtar; 5e5 of its 1e7 steps by default, as measured in
              the anchors)
Prints one JSON line per run, then per workload the medians and the ratio ours / theirs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench import compile_and_run  # noqa: E402
# name: (our module, shipped config, their script, their config, overrides, default steps, ε anneal fraction)
WORKLOADS = {
    "cartpole": ("pqn_gymnax", "pqn_cartpole", "pqn_gymnax", "pqn_cartpole", {}, 5e5, 0.2),
    "acrobot": ("pqn_gymnax", "pqn_cartpole", "pqn_gymnax", "pqn_cartpole", {"ENV_NAME": "Acrobot-v1"}, 5e5, 0.2),
    "minatar": ("pqn_minatar", "pqn_minatar", "pqn_minatar", "pqn_minatar", {}, 5e5, 0.1),
}


def ours(module: str, config: str, overrides: dict) -> dict:
    """Time our program for one seed (run in a fresh process by :func:`main`)."""
    import importlib

    import jax
    import numpy as np
    from hydra import compose, initialize_config_dir

    from purejaxql.environments import make_env

    with initialize_config_dir(config_dir=os.path.join(ROOT, "config"), version_base=None):
        cfg = dict(compose(config_name="config", overrides=[f"+alg={config}"])["alg"])
    cfg.pop("TUNE", None)
    cfg = {k: (dict(v) if hasattr(v, "items") else list(v) if hasattr(v, "__len__") and not isinstance(v, str)
               else v) for k, v in cfg.items()}
    cfg.update(overrides)
    mod = importlib.import_module(f"purejaxql.{module}")
    out, t_compile, t_run = compile_and_run(mod.make_train(cfg, make_env(cfg)), jax.random.PRNGKey(0))
    ret = np.asarray(out["metrics"].get("test_returned_episode_returns", np.nan)).reshape(-1)   # none: no tests
    return {"compile_s": round(t_compile, 1), "run_s": round(t_run, 1),
            "sps": round(float(cfg["TOTAL_TIMESTEPS"]) / t_run), "greedy_return": round(float(ret[-1]), 2)}


def run(cmd, cwd=None) -> dict:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--original", required=True, help="folder with their purejaxql/ and run_purejaxql_anchor.py")
    ap.add_argument("--original-python", required=True, help="a Python with the original's pins")
    ap.add_argument("--workloads", nargs="+", default=["cartpole", "minatar"], choices=sorted(WORKLOADS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timesteps", nargs="*", default=[], help="workload=steps, e.g. minatar=5e5")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        module, config, overrides = a.worker
        print(json.dumps(ours(module, config, json.loads(overrides))))
        return
    steps = dict(kv.split("=") for kv in a.timesteps)
    results = {}
    for _ in range(a.repeat):
        for w in a.workloads:
            module, config, script, their_cfg, extra, default, eps_frac = WORKLOADS[w]
            total = float(steps.get(w, default))
            # both sides' ε and LR schedules scaled to the budget (the original's through TOTAL_TIMESTEPS_DECAY)
            over = {**extra, "TOTAL_TIMESTEPS": total}
            mine = run([sys.executable, os.path.abspath(__file__), "--original", a.original, "--original-python",
                        a.original_python, "--worker", module, config,
                        json.dumps({**over, "EPSILON_ANNEAL_TIME": eps_frac * total})])
            kv = [f"{k}={v}" for k, v in {**over, "TOTAL_TIMESTEPS_DECAY": total}.items()]
            theirs = run([a.original_python, "run_purejaxql_anchor.py", script, their_cfg, *kv], cwd=a.original)
            ret_key = "test/returned_episode_returns"  # their greedy evaluation's return
            theirs = {**theirs, "greedy_return": theirs.get(ret_key)}
            for who, r in (("ours", mine), ("original", theirs)):
                results.setdefault((w, who), []).append(r)
                print(json.dumps({"workload": w, "who": who, "steps": total, **{k: r[k] for k in
                                  ("compile_s", "run_s", "sps", "greedy_return")}}), flush=True)
    for w in a.workloads:
        med = {who: {k: statistics.median(r[k] for r in results[(w, who)]) for k in ("sps", "compile_s")}
               for who in ("ours", "original")}
        print(f"{w}: ours {med['ours']['sps']:,.0f} env steps/s (compile {med['ours']['compile_s']} s), original "
              f"{med['original']['sps']:,.0f} (compile {med['original']['compile_s']} s): "
              f"{med['ours']['sps'] / med['original']['sps']:.2f}x (medians of {a.repeat})", flush=True)


if __name__ == "__main__":
    main()
