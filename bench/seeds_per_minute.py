"""How many CartPole seeds a machine trains per minute: ``pqn_gymnax +alg=pqn_cartpole`` (5e5 steps per seed) with
k seeds vmapped in one program, for each k given. Each k runs in a fresh process (clean compile cache).

    python bench/seeds_per_minute.py --seeds 1 4 16            # on a CPU
    python bench/seeds_per_minute.py --seeds 64 256 1024       # on a GPU (pip install -e ".[cuda]")

Printed per k: compile seconds, training seconds, seeds per minute of training (k / minutes), env steps/s
summed over seeds, and how many seeds end at the greedy return of 500. The CLI runs the same program:
``python -m purejaxql.pqn_gymnax +alg=pqn_cartpole NUM_SEEDS=1024``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def worker(k: int, timesteps: float) -> dict:
    import jax
    import numpy as np

    from purejaxql import pqn_gymnax
    from purejaxql.cli import compose
    from purejaxql.environments import make_env
    cfg = dict(compose(["+alg=pqn_cartpole"])["alg"])
    cfg.pop("TUNE", None)
    cfg = {**cfg, "TOTAL_TIMESTEPS": timesteps}
    env = make_env(cfg)
    train = jax.jit(jax.vmap(pqn_gymnax.make_train(cfg, env)))
    keys = jax.random.split(jax.random.PRNGKey(0), k)
    t0 = time.time()
    compiled = train.lower(keys).compile()
    t1 = time.time()
    out = jax.block_until_ready(compiled(keys))
    t2 = time.time()
    final = np.asarray(out["metrics"]["test_returned_episode_returns"])[:, -1]
    return {"seeds": k, "compile_s": round(t1 - t0, 2), "train_s": round(t2 - t1, 2),
            "seeds_per_minute": round(k / ((t2 - t1) / 60), 2), "env_steps_per_s": round(k * timesteps / (t2 - t1)),
            "solved": int((final >= 500).sum()), "final_mean": round(float(final.mean()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--timesteps", type=float, default=5e5)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(args.worker, args.timesteps)), flush=True)
        return
    for k in args.seeds:
        r = subprocess.run([sys.executable, __file__, "--worker", str(k), "--timesteps", str(args.timesteps)],
                           capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            sys.exit(f"k={k} failed:\n{r.stderr[-3000:]}")
        print(line[0][7:], flush=True)


if __name__ == "__main__":
    main()
