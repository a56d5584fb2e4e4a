"""Vectorisation efficiency on this machine, with bench/bench.py's settings (QMIX: JaxMARL's ql_rnn_mpe).

1. Seeds: wall time of 8 vmapped seeds vs 1 seed (compiled program only; each in a fresh process).
2. HYP_TUNE: a 16-point learning-rate grid x 2 seeds (32 runs) as one program vs 32 separate runs. The
   separate runs are timed by running ``--separate`` of them (compile + train, fresh process each) and
   scaling to 32 (``--separate 32`` runs them all).

    python bench/vectorise.py                          # qmix_ps, 2e5 env steps per run
    python bench/vectorise.py --alg pqn --timesteps 1e5 --separate 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CONFIG, PQN_CONFIG, module_name  # noqa: E402

GRID_LRS = [float(f"{x:.3g}") for x in [1e-4 * (100 ** (i / 15)) for i in range(16)]]  # 1e-4 .. 1e-2


def config(alg: str, timesteps: float) -> dict:
    cfg = {**(PQN_CONFIG if alg.startswith("pqn") else CONFIG), "TOTAL_TIMESTEPS": timesteps,
           "EPSILON_ANNEAL_TIME": 0.1 * timesteps}
    return cfg if alg.startswith("qmix") else {k: v for k, v in cfg.items() if not k.startswith("MIXER_")}


def worker(alg: str, timesteps: float, seeds: int, lrs) -> dict:
    """One process: compile + run ``seeds`` seeds (x len(lrs) learning rates when given) as one program."""
    import importlib

    import numpy as np

    from purejaxql.driver import run_training
    from purejaxql.environments import make_env
    cfg = config(alg, timesteps)
    if lrs and len(lrs) == 1:
        cfg, lrs = {**cfg, "LR": lrs[0]}, None
    hparams = None if not lrs else {"LR": np.repeat(np.asarray(lrs, np.float32), seeds)}
    t0 = time.time()
    make_train, env = importlib.import_module(f"purejaxql.{alg}").make_train, make_env(cfg)
    _, metrics, timings = run_training(lambda traced: make_train({**cfg, **traced}, env), 0, seeds, progress=False,
                                       watchdog_timeout=0, hparams=hparams)
    return {"compile_s": timings["compile_s"], "run_s": timings["run_s"], "total_s": time.time() - t0,
            "final": [float(x) for x in metrics["test_returned_episode_returns"][:, -1]]}


def spawn(alg: str, timesteps: float, seeds: int, lrs=None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--alg", alg, "--timesteps", str(timesteps), "--seeds", str(seeds),
           "--lrs", json.dumps(lrs or [])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if r.returncode != 0:
        sys.exit(f"worker failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alg", default="qmix")
    p.add_argument("--timesteps", type=float, default=2e5)
    p.add_argument("--separate", type=int, default=2, help="separate grid runs to time (scaled to 32)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--lrs", default="[]", help=argparse.SUPPRESS)
    a = p.parse_args()
    alg = module_name(a.alg)
    if a.worker:
        print(json.dumps(worker(alg, a.timesteps, a.seeds, json.loads(a.lrs))))
        return
    print(f"{alg}, MPE_simple_spread_v3, {a.timesteps:g} env steps per run", flush=True)
    one, eight = spawn(alg, a.timesteps, 1), spawn(alg, a.timesteps, 8)
    print(f"1. seeds: 1 seed {one['run_s']:.1f} s, 8 vmapped seeds {eight['run_s']:.1f} s -> "
          f"{eight['run_s'] / one['run_s']:.2f}x the time for 8x the runs (compile {one['compile_s']:.0f} s / "
          f"{eight['compile_s']:.0f} s)", flush=True)
    grid = spawn(alg, a.timesteps, 2, GRID_LRS)
    separate = [spawn(alg, a.timesteps, 1, [lr]) for lr in GRID_LRS[:a.separate] for _ in range(1)]
    per_run = sum(r["total_s"] for r in separate) / len(separate)
    print(f"2. LR grid 16 x 2 seeds: one program {grid['total_s']:.1f} s (compile {grid['compile_s']:.0f} s, "
          f"train {grid['run_s']:.1f} s); 32 separate runs ~ {32 * per_run:.0f} s "
          f"({per_run:.1f} s each incl. compile, from {len(separate)} timed) -> "
          f"{32 * per_run / grid['total_s']:.2f}x faster as one program", flush=True)


if __name__ == "__main__":
    main()
