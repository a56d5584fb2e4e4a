"""k seeds on this machine: vmapped in one program, one after another in one program (``lax.map``), or as
separate processes (as many at a time as there are CPU cores), against one seed alone. The figures behind
``SEED_BATCHING``'s default, vmap (README "Many seeds on a CPU").

Workloads: bench/bench.py's settings on MPE_simple_spread_v3 (``qmix``/``vdn``/``iql``: JaxMARL's
``ql_rnn_mpe``; ``pqn``: JaxMARL's ``pqn_vdn_ff_mpe``). Every measurement is a fresh process; the wall time
counts compile and training, as a user waits for it.

    python bench/seeds_cpu.py --alg qmix --seeds 4 --timesteps 2e5
    python bench/seeds_cpu.py --alg pqn --seeds 4 --timesteps 2e5 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CONFIG, PQN_CONFIG, module_name  # noqa: E402


def config(alg: str, timesteps: float) -> dict:
    cfg = {**(PQN_CONFIG if alg.startswith("pqn") else CONFIG), "TOTAL_TIMESTEPS": timesteps,
           "EPSILON_ANNEAL_TIME": 0.1 * timesteps}
    return cfg if alg.startswith("qmix") else {k: v for k, v in cfg.items() if not k.startswith("MIXER_")}


def worker(alg: str, timesteps: float, seeds: int, batching: str, seed: int) -> dict:
    """One process: compile and train ``seeds`` seeds as one program."""
    import importlib

    from purejaxql.driver import run_training
    from purejaxql.environments import make_env
    cfg = config(alg, timesteps)
    make_train, env = importlib.import_module(f"purejaxql.{alg}").make_train, make_env(cfg)
    _, metrics, timings = run_training(lambda traced: make_train({**cfg, **traced}, env), seed, seeds,
                                       progress=False, watchdog_timeout=0, batching=batching)
    return {"compile_s": timings["compile_s"], "run_s": timings["run_s"],
            "final": [float(x) for x in metrics["test_returned_episode_returns"][:, -1]]}


def command(alg: str, timesteps: float, seeds: int, batching: str, seed: int = 0):
    return [sys.executable, __file__, "--worker", "--alg", alg, "--timesteps", str(timesteps), "--seeds", str(seeds),
            "--batching", batching, "--seed", str(seed)]


def spawn(*args) -> dict:
    """Wall time of one process (compile + train) and what it printed."""
    t0 = time.time()
    r = subprocess.run(command(*args), capture_output=True, text=True, env=os.environ)
    if r.returncode != 0:
        sys.exit(f"worker failed: {r.stderr[-2000:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": time.time() - t0}


def separate(alg: str, timesteps: float, seeds: int, at_once: int) -> float:
    """Wall time of ``seeds`` one-seed processes, ``at_once`` at a time."""
    t0, pending, running = time.time(), list(range(seeds)), []
    while pending or running:
        while pending and len(running) < at_once:
            running.append(subprocess.Popen(command(alg, timesteps, 1, "vmap", pending.pop(0)),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        running[0].wait()
        if running[0].returncode != 0:
            sys.exit("a separate seed's process failed")
        running.pop(0)
    return time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alg", default="qmix")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--timesteps", type=float, default=2e5)
    p.add_argument("--repeat", type=int, default=1, help="alternate the ways this many times; print medians")
    p.add_argument("--at-once", type=int, default=os.cpu_count() or 1, help="separate processes at a time")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batching", default="vmap", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    alg = module_name(a.alg)
    if a.worker:
        print(json.dumps(worker(alg, a.timesteps, a.seeds, a.batching, a.seed)))
        return
    k = a.seeds
    print(f"{alg}, MPE_simple_spread_v3, {a.timesteps:g} env steps per seed, k = {k} seeds "
          f"(wall seconds: compile + train)", flush=True)
    ways = {"1 seed": lambda: spawn(alg, a.timesteps, 1, "vmap", 0),
            f"{k} vmapped": lambda: spawn(alg, a.timesteps, k, "vmap", 0),
            f"{k} lax.map": lambda: spawn(alg, a.timesteps, k, "map", 0),
            f"{k} processes, {a.at_once} at a time": lambda: {"wall_s": separate(alg, a.timesteps, k, a.at_once)}}
    times = {w: [] for w in ways}
    for i in range(a.repeat):
        for w, f in ways.items():
            r = f()
            times[w].append(r["wall_s"])
            split = f" (compile {r['compile_s']:.1f}, train {r['run_s']:.1f})" if "run_s" in r else ""
            print(f"  round {i + 1}: {w}: {r['wall_s']:.1f} s{split}", flush=True)
    one = statistics.median(times["1 seed"])
    print(f"| way | wall s (median of {a.repeat}) | x one seed's time | x {k} one-seed runs in turn |")
    print("|---|---|---|---|")
    for w, ts in times.items():
        m = statistics.median(ts)
        print(f"| {w} | {m:.1f} | {m / one:.2f} | {m / (k * one):.2f} |")


if __name__ == "__main__":
    main()
