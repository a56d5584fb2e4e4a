"""Speed and final-return benchmark of every algorithm on MPE_simple_spread_v3.

Replay Q-learners (iql, vdn, qmix): JaxMARL's ``ql_rnn_mpe`` settings (8 envs x 26 steps, GRU 64, buffer
5000, batch 32, LR 0.005 with linear decay, gamma 0.9, target sync every 200 updates, epsilon 1 -> 0.05 over
10% of training, LEARNING_STARTS 10000, MAX_GRAD_NORM 25, 512 greedy test episodes every 5%).
PQN: JaxMARL's ``pqn_vdn_ff_mpe`` settings (256 envs x 16 steps, 2 x 256 MLP with LayerNorm, 4 epochs x 16
minibatches, RAdam LR 5e-4, MAX_GRAD_NORM 1, gamma 0.9, lambda 0.3, epsilon 1 -> 0.1 over 10% of training,
512 greedy test episodes every 5%). Both leave the time-out step out of the loss (TIMEOUT_AS_TERMINAL False;
``--timeout-terminal`` treats it as terminal, as JaxMARL does). 2e6 env steps per seed by default.

    python bench/bench.py                       # iql, vdn, qmix (_ps); 1 seed and 4 vmapped seeds
    python bench/bench.py --algs qmix --seeds 4 --timesteps 5e5
    python bench/bench.py --algs vdn_ps vdn_ns --seeds 1   # shared vs per-agent parameters
    python bench/bench.py --algs pqn vdn --seeds 4         # PQN-VDN vs VDN, 4 seeds each
    python bench/bench.py --algs qmix --seeds 2 --timesteps 1e6 --td-lambda 0.6   # TD(λ) targets
    python bench/bench.py --algs qmix qmix:PER=True qmix:TD_LAMBDA=0.6 --seeds 1 --repeat 3   # A/B/C x 3
    python bench/bench.py --algs qmix qplex owqmix cwqmix qatten --seeds 1 --repeat 3  # the mixers

Each measurement runs in a fresh process (clean compile cache, its own peak RSS). Printed per run:
compile seconds, wall seconds of the compiled program, env steps/s (summed over seeds), peak RSS, the
size of the training state's parameters (agent + mixer, their target copies and the optimiser state)
and the final greedy team return (mean and per seed). ``--algs`` takes modules (``qmix_ns``) or
algorithms (``qmix`` = ``qmix_ps``), each optionally with config overrides after a colon
(``qmix:PER=True,TD_LAMBDA=0.6``). ``--repeat K`` runs the whole list K times in alternation (A B C A B C
...) and ends with each entry's median steps/s, the way speed ratios are measured on noisy machines.
Keys an algorithm does not read (the QMIX mixer keys for VDN, ...) are dropped from the shared settings.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIG = {
    "ENV_NAME": "MPE_simple_spread_v3", "NUM_ENVS": 8, "NUM_STEPS": 26, "BUFFER_SIZE": 5000,
    "BUFFER_BATCH_SIZE": 32, "AGENT_HIDDEN_DIM": 64, "AGENT_TYPE": "rnn", "EPSILON_START": 1.0,
    "EPSILON_FINISH": 0.05, "MAX_GRAD_NORM": 25, "TARGET_UPDATE_INTERVAL": 200, "TAU": 1.0,
    "NUM_EPOCHS": 1, "LR": 0.005, "LR_LINEAR_DECAY": True, "GAMMA": 0.9, "LEARNING_STARTS": 10000,
    "TEST_DURING_TRAINING": True, "TEST_INTERVAL": 0.05, "TEST_NUM_ENVS": 512, "TEST_NUM_STEPS": 26,
    "MIXER_EMBEDDING_DIM": 32, "MIXER_HYPERNET_HIDDEN_DIM": 128, "MIXER_INIT_SCALE": 0.001,
    "TIMEOUT_AS_TERMINAL": False,
}
PQN_CONFIG = {
    "ENV_NAME": "MPE_simple_spread_v3", "NUM_ENVS": 256, "NUM_STEPS": 16, "NUM_EPOCHS": 4, "NUM_MINIBATCHES": 16,
    "AGENT_TYPE": "ff", "AGENT_HIDDEN_DIM": 256, "NUM_LAYERS": 2, "NORM_TYPE": "layer_norm", "NORM_INPUT": False,
    "MIXER": "vdn", "EPSILON_START": 1.0, "EPSILON_FINISH": 0.1, "MAX_GRAD_NORM": 1.0, "LR": 0.0005,
    "LR_LINEAR_DECAY": False, "OPTIMIZER": "radam", "GAMMA": 0.9, "LAMBDA": 0.3, "TEST_DURING_TRAINING": True,
    "TEST_INTERVAL": 0.05, "TEST_NUM_ENVS": 512, "TEST_NUM_STEPS": 26, "TIMEOUT_AS_TERMINAL": False,
}


def compile_and_run(program, *args):
    """(output, compile seconds, run seconds) of ``jax.jit(program)`` on ``args``: compiled ahead of time, so
    the run excludes compilation; the run waits for every output."""
    import jax
    t0 = time.time()
    compiled = jax.jit(program).lower(*args).compile()
    compile_s = time.time() - t0
    t0 = time.time()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.time() - t0


def module_name(alg: str) -> str:
    alg = alg.split(":")[0]
    return alg if alg.endswith(("_ps", "_ns")) else f"{alg}_ps"


def overrides(alg: str) -> dict:
    """``qmix:PER=True,TD_LAMBDA=0.6`` -> {"PER": True, "TD_LAMBDA": 0.6} (values read as YAML)."""
    import yaml
    if ":" not in alg:
        return {}
    pairs = [kv.split("=", 1) for kv in alg.split(":", 1)[1].split(",") if kv]
    return {k: yaml.safe_load(v) for k, v in pairs}


def worker(alg: str, seeds: int, timesteps: float, seed: int, env_name: str, timeout_terminal: bool,
           td_lambda: float = 0.0) -> dict:
    import importlib

    import jax
    import numpy as np

    from purejaxql.config import defaults_for
    from purejaxql.environments import make_env
    from purejaxql.spec import SPECS

    cfg = {**(PQN_CONFIG if alg.startswith("pqn") else CONFIG), "ENV_NAME": env_name, "TOTAL_TIMESTEPS": timesteps,
           "EPSILON_ANNEAL_TIME": 0.1 * timesteps, "TIMEOUT_AS_TERMINAL": timeout_terminal}
    known = defaults_for(SPECS[module_name(alg)].algorithm)
    cfg = {k: v for k, v in cfg.items() if k in known}
    if td_lambda:
        cfg["TD_LAMBDA"] = td_lambda
    cfg.update(overrides(alg))
    env = make_env(cfg)
    train = importlib.import_module(f"purejaxql.{module_name(alg)}").make_train(cfg, env)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    # one seed runs unbatched, as the CLI does (vmap adds a batch axis that XLA:CPU runs slower)
    program = jax.vmap(train) if seeds > 1 else (lambda k: jax.tree.map(lambda x: x[None], train(k[0])))
    out, compile_s, run_s = compile_and_run(program, keys)
    final = np.asarray(out["metrics"]["test_returned_episode_returns"][:, -1])
    steps = float(np.asarray(out["metrics"]["env_step"])[0, -1]) * seeds
    ts = out["runner_state"].train
    state = (ts.params, getattr(ts, "target_params", None), ts.opt_state)
    state_mb = sum(x.nbytes for x in jax.tree.leaves(state)) / seeds / 2**20
    return {"alg": alg, "env": env_name, "seeds": seeds, "seed": seed,
            "timeout_terminal": timeout_terminal, "td_lambda": td_lambda, "timesteps": timesteps,
            "compile_s": round(compile_s, 1),
            "run_s": round(run_s, 1), "steps_per_s": round(steps / run_s),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "param_state_mb_per_seed": round(state_mb, 2),
            "final_return_mean": round(float(final.mean()), 2),
            "final_return_per_seed": [round(float(x), 2) for x in final]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algs", nargs="+", default=["iql", "vdn", "qmix"])
    p.add_argument("--env", default=CONFIG["ENV_NAME"], help="a JaxMARL MPE scenario")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 4])
    p.add_argument("--timesteps", type=float, default=2e6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also append results to this JSON-lines file")
    p.add_argument("--timeout-terminal", action="store_true", help="treat time-outs as terminal (JaxMARL's way)")
    p.add_argument("--td-lambda", type=float, default=0.0, help="TD_LAMBDA of the replay learners (0 = 1-step)")
    p.add_argument("--repeat", type=int, default=1, help="run the list this many times, alternating; print medians")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.algs[0], a.seeds[0], a.timesteps, a.seed, a.env, a.timeout_terminal, a.td_lambda)))
        return
    print(f"{a.env}, {a.timesteps:g} env steps per seed", flush=True)
    print(f"{'alg':8} {'seeds':>5} {'compile s':>9} {'run s':>7} {'steps/s':>9} {'RSS MB':>7} {'state MB':>8} "
          f"{'final return':>12}  per seed", flush=True)
    speeds = {}
    for alg, seeds in [(alg, seeds) for _ in range(a.repeat) for alg in a.algs for seeds in a.seeds]:
        cmd = [sys.executable, __file__, "--worker", "--algs", alg, "--seeds", str(seeds),
               "--timesteps", str(a.timesteps), "--seed", str(a.seed), "--env", a.env] + \
            (["--timeout-terminal"] if a.timeout_terminal else []) + ["--td-lambda", str(a.td_lambda)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if res.returncode != 0:
            print(f"{alg} seeds={seeds} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            sys.exit(1)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        speeds.setdefault((alg, seeds), []).append(r["steps_per_s"])
        print(f"{r['alg']:8} {seeds:5d} {r['compile_s']:9.1f} {r['run_s']:7.1f} {r['steps_per_s']:9,d} "
              f"{r['peak_rss_mb']:7d} {r['param_state_mb_per_seed']:8.2f} {r['final_return_mean']:12.2f}  "
              f"{r['final_return_per_seed']}",
              flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    if a.repeat > 1:
        first = statistics.median(next(iter(speeds.values())))
        print("median env steps/s over the repeats (ratio to the first entry):")
        for (alg, seeds), v in speeds.items():
            m = statistics.median(v)
            print(f"  {alg:30} seeds={seeds}: {m:9,.0f}  ({m / first:.2f}x)  runs: {v}")


if __name__ == "__main__":
    main()
