"""What the CLI's run machinery costs: the training program as one ``jax.jit`` call vs the CLI's way
(chunks of updates with the live progress line, metrics.csv, periodic full-state checkpoints and the NaN
check), on bench/bench.py's settings. Also checks that both give bit-identical metrics.

    python bench/run_overhead.py                         # qmix_ps, 2e6 env steps, 1 seed
    python bench/run_overhead.py --alg pqn --timesteps 1e6 --seeds 2 --checkpoint-interval 0.05
    python bench/run_overhead.py --alg qmix --config qmix_smax_cpu --timesteps 3e5   # a shipped config instead

Printed: train seconds of each way (compile excluded), the overhead in percent, the number and size of the
state checkpoints and the time spent writing them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CONFIG, PQN_CONFIG, module_name  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alg", default="qmix")
    p.add_argument("--timesteps", type=float, default=2e6)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--checkpoint-interval", type=float, default=0.1)
    p.add_argument("--config", help="a shipped alg config (+alg=NAME) instead of bench.py's MPE settings")
    a = p.parse_args()

    import jax
    import numpy as np

    from purejaxql import run_folder
    from purejaxql.driver import run_training
    from purejaxql.environments import make_env
    from purejaxql.experiment import checkpoint_every

    alg = module_name(a.alg)
    if a.config:
        from purejaxql.cli import compose
        base = {k: v for k, v in compose([f"+alg={a.config}"])["alg"].items() if k != "TUNE"}
    else:
        base = PQN_CONFIG if alg.startswith("pqn") else CONFIG
    cfg = {**base, "TOTAL_TIMESTEPS": a.timesteps, "EPSILON_ANNEAL_TIME": 0.1 * a.timesteps}
    if not alg.startswith("qmix") and not a.config:
        cfg = {k: v for k, v in cfg.items() if not k.startswith("MIXER_")}
    env = make_env(cfg)
    make_train = importlib.import_module(f"purejaxql.{alg}").make_train

    # 1. one jitted program (what a notebook does)
    train = make_train(cfg, env)
    keys = jax.random.split(jax.random.PRNGKey(0), a.seeds)
    program = jax.vmap(train) if a.seeds > 1 else (lambda k: jax.tree.map(lambda x: x[None], train(k[0])))
    compiled = jax.jit(program).lower(keys).compile()
    t = time.time()
    whole = jax.tree.map(np.asarray, compiled(keys)["metrics"])
    single_s = time.time() - t

    # 2. the CLI's way: chunks + progress line + metrics.csv + state checkpoints + NaN check
    with tempfile.TemporaryDirectory() as folder:
        saves = []
        n_updates = train.config["NUM_UPDATES"]
        rec = run_folder.Recorder(Path(folder), n_updates, checkpoint_every(a.checkpoint_interval, n_updates),
                                  2, True, {"module": alg}, alg)
        save = run_folder.save_state

        def timed_save(*args, **kw):
            t0 = time.time()
            path = save(*args, **kw)
            saves.append((time.time() - t0, path.stat().st_size))
            return path
        run_folder.save_state = timed_save
        _, _, timings = run_training(lambda traced: train, 0, a.seeds, progress=True, watchdog_timeout=0,
                                     on_chunk=rec.chunk)
        chunked = rec.history()
    same = all(np.array_equal(whole[k], chunked[k], equal_nan=True) for k in whole)
    overhead = 100 * (timings["run_s"] / single_s - 1)
    save_s = sum(s for s, _ in saves)
    mb = saves[-1][1] / 2**20 if saves else 0.0
    print(f"{alg}, {a.timesteps:g} env steps x {a.seeds} seed(s), {n_updates} updates")
    print(f"  one jitted program:        {single_s:8.1f} s")
    print(f"  CLI chunks + run folder:   {timings['run_s']:8.1f} s  ({overhead:+.1f} %)")
    print(f"  state checkpoints: {len(saves)} x {mb:.1f} MB, {save_s:.2f} s writing them")
    print(f"  metrics bit-identical: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
