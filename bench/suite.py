"""The benchmark suite: one command, on whatever device JAX sees, prints one table of the figures users quote.

Per workload (an algorithm module with a shipped config) and per seed count k: env steps/s summed over the
k seeds (k vmapped in one program, ``SEED_BATCHING=vmap``; 1 = one run unbatched), compile seconds, peak
memory (the device's peak bytes in use where JAX reports it, an accelerator; the process's peak RSS on a
CPU) and the final greedy return (mean over seeds). Each measurement is a fresh process.

    python bench/suite.py                         # every workload at --size full (an accelerator's budget)
    python bench/suite.py --size cpu              # small budgets that finish on a 2-core CPU (~20 min)
    python bench/suite.py --size cpu --workloads qmix_mpe pqn_cartpole --seeds 1 4
    python bench/suite.py --size tiny             # a few updates each: checks the suite runs (tests)
    python bench/suite.py --json suite.jsonl      # also append each row as JSON

Sizes: ``full`` trains each shipped config for its published budget (PQN-VDN on SMAX 3m: the PQN authors'
pqn_vdn_rnn_smax settings, 1e7 steps; QMIX on SMAX: JaxMARL's ql_rnn_smax, 1e7 steps; MPE at 1, 16 and 256
seeds; CartPole at 1, 16 and 256; MinAtar Asterix at 1 and 16; Overcooked cramped_room (VDN, PQN-VDN: JaxMARL's
sizes) at 1 and 4; Hanabi (PQN-VDN: JaxMARL's pqn_vdn_ff_hanabi sizes, and VDN) for 1e8 steps at 1 and 4); ``cpu`` cuts every budget to one that a
2-core CPU finishes in minutes (SMAX with the CPU-sized qmix_smax_cpu), seeds 1 and 4; ``tiny`` runs a few
updates with seeds 1 and 2. ``--seeds`` replaces the seed counts of every workload.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Workload:
    module: str                                   # purejaxql.<module>
    config: str                                   # shipped alg config (+alg=<config>)
    full_seeds: Tuple[int, ...]                   # seed counts at --size full
    cpu_config: Optional[str] = None              # shipped alg config at --size cpu/tiny (default: config)
    cpu_timesteps: float = 2e5                    # env steps per seed at --size cpu
    overrides: Tuple[Tuple[str, object], ...] = ()
    cpu_overrides: Tuple[Tuple[str, object], ...] = ()   # on top, at --size cpu / tiny


FOUR_EVALS = (("TEST_INTERVAL", 0.25),)                  # at --size cpu: 4 greedy evaluations
OVERCOOKED_CPU = FOUR_EVALS + (("TEST_NUM_ENVS", 64),)
WORKLOADS: Dict[str, Workload] = {
    "pqn_smax": Workload("pqn_ps", "pqn_smax", (1, 4), cpu_timesteps=6.6e4),
    "qmix_smax": Workload("qmix_ps", "qmix_smax", (1, 4), cpu_config="qmix_smax_cpu", cpu_timesteps=2e5),
    "qmix_mpe": Workload("qmix_ps", "qmix_mpe", (1, 16, 256)),
    "vdn_mpe": Workload("vdn_ps", "vdn_mpe", (1, 16, 256)),
    "iql_mpe": Workload("iql_ps", "iql_mpe", (1, 16, 256)),
    "pqn_mpe": Workload("pqn_ps", "pqn_mpe", (1, 16, 256)),
    "pqn_cartpole": Workload("pqn_gymnax", "pqn_cartpole", (1, 16, 256), cpu_timesteps=1e5),
    "pqn_minatar": Workload("pqn_minatar", "pqn_minatar", (1, 16), cpu_timesteps=1e5),
    # convolutional agents on Overcooked cramped_room (~100-500 env steps/s on a 2-core CPU); at --size cpu, 4
    # greedy evaluations over 64 games (20 over 512 games of 401 steps would dwarf the training)
    "vdn_overcooked": Workload("vdn_ps", "vdn_overcooked", (1, 4), cpu_timesteps=1e4, cpu_overrides=OVERCOOKED_CPU),
    "pqn_overcooked": Workload("pqn_ps", "pqn_overcooked", (1, 4), cpu_timesteps=1e4, cpu_overrides=OVERCOOKED_CPU),
    # Hanabi, JaxMARL's pqn_vdn_ff_hanabi sizes; 1e8 steps at --size full (the config's 2e9 is a training run);
    # at --size cpu 4 evaluations (pqn_hanabi's TEST_INTERVAL 0.005 is every update of a 2e5-step run)
    "pqn_hanabi": Workload("pqn_ps", "pqn_hanabi", (1, 4), cpu_timesteps=2e5, overrides=(("TOTAL_TIMESTEPS", 1e8),),
                           cpu_overrides=FOUR_EVALS),
    "vdn_hanabi": Workload("vdn_ps", "vdn_hanabi", (1, 4), cpu_timesteps=2e5, overrides=(("TOTAL_TIMESTEPS", 1e8),),
                           cpu_overrides=FOUR_EVALS),
}


def settings(name: str, size: str) -> Dict[str, object]:
    """The alg config of a workload at ``size``."""
    from purejaxql.cli import compose
    w = WORKLOADS[name]
    cfg = compose([f"+alg={w.config if size == 'full' else (w.cpu_config or w.config)}"])["alg"]
    cfg.pop("TUNE", None)
    cfg.update(dict(w.overrides))
    if size != "full":
        cfg.update(dict(w.cpu_overrides))
    per_update = float(cfg["NUM_ENVS"]) * float(cfg["NUM_STEPS"])
    if size == "cpu":
        cfg["TOTAL_TIMESTEPS"] = max(w.cpu_timesteps, 2 * per_update)
    elif size == "tiny":  # a few updates, with the learner running from the first
        cfg.update(TOTAL_TIMESTEPS=4 * per_update, TEST_INTERVAL=0.5)
        if "LEARNING_STARTS" in cfg:  # replay learners only
            cfg["LEARNING_STARTS"] = 0
        if "BUFFER_BATCH_SIZE" in cfg:
            cfg["BUFFER_BATCH_SIZE"] = min(int(cfg["BUFFER_BATCH_SIZE"]), int(cfg["NUM_ENVS"]))
    if size != "full" and "EPSILON_ANNEAL_TIME" in cfg:
        cfg["EPSILON_ANNEAL_TIME"] = 0.1 * float(cfg["TOTAL_TIMESTEPS"])
    return cfg


def peak_memory() -> Tuple[float, str]:
    """(bytes, what): the device's peak bytes in use where JAX reports them, else this process's peak RSS."""
    import jax
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "RSS"


def worker(name: str, size: str, seeds: int) -> dict:
    """One process: compile and train ``seeds`` seeds of a workload."""
    import importlib

    import jax
    import numpy as np

    from purejaxql.driver import run_training
    from purejaxql.environments import make_env
    cfg = settings(name, size)
    make_train, env = importlib.import_module(f"purejaxql.{WORKLOADS[name].module}").make_train, make_env(cfg)
    _, metrics, timings = run_training(lambda traced: make_train({**cfg, **traced}, env), 0, seeds,
                                       progress=False, watchdog_timeout=0, batching="vmap")
    ret = metrics.get("test_returned_episode_returns")
    memory, what = peak_memory()
    device = jax.local_devices()[0]
    return {"workload": name, "size": size, "seeds": seeds, "timesteps": float(cfg["TOTAL_TIMESTEPS"]),
            "steps_per_s": timings["steps_per_s"], "compile_s": timings["compile_s"], "run_s": timings["run_s"],
            "peak_memory_bytes": memory, "memory_kind": what,
            "final_return": None if ret is None else float(np.mean(ret[:, -1])),
            "device": f"{device.platform}: {device.device_kind}", "devices": len(jax.local_devices())}


def measure(name: str, size: str, seeds: int, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--size", size, "--seeds", str(seeds)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"workload": name, "seeds": seeds, "error": f"timed out after {timeout:g} s"}
    if r.returncode != 0:
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        return {"workload": name, "seeds": seeds, "error": lines[-1] if lines else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['workload']} | {r['seeds']} | failed: {r['error']} | | | |"
    ret = "" if r["final_return"] is None else f"{r['final_return']:.3g}"
    return (f"| {r['workload']} | {r['seeds']} | {r['steps_per_s']:,.0f} | {r['compile_s']:.1f} | "
            f"{r['peak_memory_bytes'] / 2 ** 30:.2f} GiB ({r['memory_kind']}) | {ret} |")


def main(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("full", "cpu", "tiny"), default="full")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--seeds", nargs="+", type=int, help="seed counts for every workload (default: per size)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement before it is abandoned")
    p.add_argument("--json", help="also append each row to this JSON-lines file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.size, a.seeds[0])))
        return
    rows = []
    header = False
    for name in a.workloads:
        counts = a.seeds or {"full": WORKLOADS[name].full_seeds, "cpu": (1, 4), "tiny": (1, 2)}[a.size]
        for k in counts:
            r = measure(name, a.size, k, a.timeout)
            if not header and "device" in r:
                print(f"purejaxql benchmark suite, --size {a.size}, on {r['device']} ({r['devices']} device(s))")
                print("| workload | seeds | env steps/s (all seeds) | compile s | peak memory | final greedy return |")
                print("|---|---|---|---|---|---|", flush=True)
                header = True
            print(row(r), flush=True)
            rows.append(r)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    failed = [r for r in rows if "error" in r]
    if not header:
        print("\n".join(row(r) for r in rows))
    if failed:
        sys.exit(f"{len(failed)} measurement(s) failed")


if __name__ == "__main__":
    main()
