"""QMIX / VDN on Level-Based Foraging side by side with EPyMARL (github uoe-agents/epymarl, PyTorch), same
machine, same task, same batch and update ratio, one seed, alternating runs (ours, theirs, ...), each in a
fresh process.

    python bench/vs_epymarl.py --epymarl DIR --epymarl-python PY [--algs qmix vdn] [--repeat 3]
        [--their-steps 30000] [--our-steps 2e5]

DIR is an EPyMARL checkout (``src/main.py``), PY a Python with torch, sacred and lbforaging 2.0 (see
``../shared/anchors/README.md``). The task: ``Foraging-8x8-2p-2f-coop-v3`` there, ``lbf`` /
``8x8-2p-2f-coop`` here (Jumanji's LBF). Both sides run their shipped settings for it (EPyMARL's
``--config=qmix|vdn --env-config=gymma``; our ``qmix_lbf`` / ``vdn_lbf``, which copy EPyMARL's: batches of 32
sequences of 50 steps, one gradient step per 50 env steps, feed-forward agents of 64).

What is timed: training only, steady state. EPyMARL's env steps/s is read from the timestamps sacred writes
with its runner log (every 1000 steps here) between 5000 steps (learning has started) and the end; its test
episodes are moved out of that window (one test at t = 0). Ours: ``jax.jit(make_train)`` compiled first,
then the whole run (TEST_DURING_TRAINING=False) timed; env steps/s = TOTAL_TIMESTEPS / run seconds.
Prints one JSON line per run, then per algorithm the medians and the ratio ours / theirs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

from vs_original_pqn import run

KEY = "lbforaging:Foraging-8x8-2p-2f-coop-v3"


def theirs(epymarl: str, python: str, alg: str, steps: int) -> dict:
    """One EPyMARL run of ``steps`` env steps; its steady-state env steps/s from sacred's timestamps."""
    runs = os.path.join(epymarl, "results", "sacred", alg, KEY)
    before = set(os.listdir(runs)) if os.path.isdir(runs) else set()
    cmd = [python, "src/main.py", f"--config={alg}", "--env-config=gymma", "with", "env_args.time_limit=50",
           f"env_args.key={KEY}", f"t_max={steps}", "test_interval=100000000", "test_nepisode=10",
           "log_interval=1000", "runner_log_interval=1000", "learner_log_interval=1000", "save_model=False",
           "use_tensorboard=False", "seed=0"]
    with tempfile.TemporaryFile("w+") as log:
        r = subprocess.run(cmd, cwd=epymarl, stdout=log, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            log.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read()[-4000:]}")
    new = sorted(set(os.listdir(runs)) - before - {"_sources"}, key=int)
    metrics = json.load(open(os.path.join(runs, new[-1], "metrics.json")))["epsilon"]
    t = [datetime.datetime.fromisoformat(s).timestamp() for s in metrics["timestamps"]]
    i0 = next(i for i, s in enumerate(metrics["steps"]) if s >= 5000)
    sps = (metrics["steps"][-1] - metrics["steps"][i0]) / (t[-1] - t[i0])
    return {"run_s": round(t[-1] - t[0], 1), "sps": round(sps), "compile_s": 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epymarl", required=True, help="an EPyMARL checkout (src/main.py)")
    ap.add_argument("--epymarl-python", required=True, help="a Python with torch, sacred, lbforaging")
    ap.add_argument("--algs", nargs="+", default=["qmix", "vdn"], choices=["qmix", "vdn"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--their-steps", type=int, default=30000)
    ap.add_argument("--our-steps", type=float, default=2e5)
    a = ap.parse_args()
    results = {}
    for _ in range(a.repeat):
        for alg in a.algs:
            over = {"TOTAL_TIMESTEPS": a.our_steps, "TEST_DURING_TRAINING": False}
            mine = run([sys.executable, "-c", "import json, sys; sys.path.insert(0, 'bench'); "
                        "from vs_original_pqn import ours; "
                        f"print(json.dumps(ours('{alg}_ps', '{alg}_lbf', json.loads(sys.argv[1]))))",
                        json.dumps(over)], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            their = theirs(a.epymarl, a.epymarl_python, alg, a.their_steps)
            for who, r in (("ours", mine), ("epymarl", their)):
                results.setdefault((alg, who), []).append(r)
                print(json.dumps({"alg": alg, "who": who, **{k: r[k] for k in ("compile_s", "run_s", "sps")}}),
                      flush=True)
    for alg in a.algs:
        med = {who: statistics.median(r["sps"] for r in results[(alg, who)]) for who in ("ours", "epymarl")}
        print(f"{alg} on LBF 8x8-2p-2f-coop: ours {med['ours']:,.0f} env steps/s, EPyMARL {med['epymarl']:,.0f}: "
              f"{med['ours'] / med['epymarl']:.1f}x (medians of {a.repeat})", flush=True)


if __name__ == "__main__":
    main()
