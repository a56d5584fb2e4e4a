"""Overcooked side by side with JaxMARL's own Q-learning scripts: env steps/s of one seed, same settings.

JaxMARL's ``pqn_vdn_cnn_overcooked.py`` / ``vdn_cnn_overcooked.py`` / ``iql_cnn_overcooked.py`` (github
FLAIROx/JaxMARL, ``baselines/QLearning``; ``git archive HEAD baselines/QLearning`` of a snapshot, see
../shared/anchors/) against ``pqn_ps`` / ``vdn_ps`` / ``iql_ps`` with ``+alg=<alg>_overcooked``, both given the
same CPU-sized settings (SIZES below: fewer envs, a narrower network, fewer gradient steps than the GPU
configs). Each run is a fresh process (ours and theirs alternating, ``--repeat`` times; medians printed) that
compiles ``jax.jit(jax.vmap(make_train(config, env)))`` on one key, then times the run alone: env steps/s =
TOTAL_TIMESTEPS / run seconds (their greedy evaluations and ours run inside, with the same sizes).

    python bench/vs_jaxmarl_overcooked.py --jaxmarl DIR/baselines/QLearning --alg pqn --repeat 3

Differences that remain: JaxMARL's CNN ends in a Dense 64 before the Q head (ours feeds the convolutions to the
first hidden Dense); their replay stores transitions (ours chunks of NUM_STEPS steps, here 1); their time-outs
are terminal.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# CPU-sized settings given to both (JaxMARL's key names; ours are mapped in ours_config)
SIZES = {
    "pqn": dict(TOTAL_TIMESTEPS=2 ** 15, NUM_ENVS=32, NUM_STEPS=16, NUM_MINIBATCHES=4, NUM_EPOCHS=2,
                HIDDEN_SIZE=128, NUM_LAYERS=2, TEST_NUM_ENVS=8, TEST_INTERVAL=0.5, TEST_NUM_STEPS=400),
    "vdn": dict(TOTAL_TIMESTEPS=2 ** 13, NUM_ENVS=32, NUM_STEPS=1, BUFFER_SIZE=10000, BUFFER_BATCH_SIZE=32,
                NUM_EPOCHS=1, HIDDEN_SIZE=64, LEARNING_STARTS=1000, TEST_NUM_ENVS=8, TEST_INTERVAL=0.5,
                TEST_NUM_STEPS=400),
}
SIZES["iql"] = SIZES["vdn"]
THEIRS = {"pqn": ("pqn_vdn_cnn_overcooked", "pqn_vdn_cnn_overcooked"), "vdn": ("vdn_cnn_overcooked", "ql_cnn_overcooked"),
          "iql": ("iql_cnn_overcooked", "ql_cnn_overcooked")}


def theirs_run(jaxmarl: str, alg: str) -> dict:
    import jax
    import yaml
    sys.path.insert(0, jaxmarl)
    module_name, config_name = THEIRS[alg]
    module = __import__(module_name)
    with open(os.path.join(jaxmarl, "config", "config.yaml")) as f:
        config = yaml.safe_load(f)
    with open(os.path.join(jaxmarl, "config", "alg", f"{config_name}.yaml")) as f:
        config.update(yaml.safe_load(f))
    config = {k: number(v) for k, v in config.items()}   # yaml reads 5e6 as a string (hydra as a float)
    config.update(SIZES[alg], ENV_KWARGS={"layout": "cramped_room"}, WANDB_MODE="disabled", NUM_SEEDS=1)
    env, _ = module.env_from_config(dict(config, ENV_KWARGS=dict(config["ENV_KWARGS"])))
    return timed(jax.jit(jax.vmap(module.make_train(config, env))), config["TOTAL_TIMESTEPS"])


def number(v):
    """A yaml string that is a number (2.5e6) as a float, anything else unchanged."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def ours_config(alg: str) -> dict:
    from purejaxql.cli import compose
    cfg = compose([f"+alg={alg}_overcooked"])["alg"]
    cfg.pop("TUNE", None)
    sizes = dict(SIZES[alg])
    sizes["AGENT_HIDDEN_DIM"] = sizes.pop("HIDDEN_SIZE")
    return {**cfg, **sizes}


def ours_run(alg: str) -> dict:
    import jax
    import importlib
    from purejaxql.environments import make_env
    cfg = ours_config(alg)
    env = make_env(cfg)
    module = importlib.import_module(f"purejaxql.{alg}_ps")
    train = module.make_train({k: v for k, v in cfg.items() if k not in ("ENV_NAME", "ENV_KWARGS")}, env)
    return timed(jax.jit(jax.vmap(train)), cfg["TOTAL_TIMESTEPS"])


def timed(program, steps) -> dict:
    import jax
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    t = time.time()
    compiled = program.lower(keys).compile()
    compile_s = time.time() - t
    t = time.time()
    out = jax.block_until_ready(compiled(keys))
    run_s = time.time() - t
    metrics = out.get("metrics") or {}   # JaxMARL's replay scripts return no metrics (they log them)
    ret = float(jax.numpy.asarray(metrics["test_returned_episode_returns"])[0, -1]) if (
        "test_returned_episode_returns" in metrics) else float("nan")
    return {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / run_s, "final_greedy": ret}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jaxmarl", required=True, help="JaxMARL's baselines/QLearning folder")
    p.add_argument("--alg", choices=sorted(THEIRS), default="pqn")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = ours_run(args.alg) if args.worker == "ours" else theirs_run(args.jaxmarl, args.alg)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    if not os.path.isfile(os.path.join(args.jaxmarl, f"{THEIRS[args.alg][0]}.py")):
        p.error(f"--jaxmarl {args.jaxmarl}: no {THEIRS[args.alg][0]}.py there (JaxMARL's baselines/QLearning)")
    rates = {"ours": [], "theirs": []}
    for i in range(args.repeat):
        for who in ("ours", "theirs"):
            r = subprocess.run([sys.executable, __file__, "--jaxmarl", args.jaxmarl, "--alg", args.alg,
                                "--worker", who], capture_output=True, text=True, cwd=ROOT)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(f"{who} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            res = json.loads(line[0][7:])
            rates[who].append(res["steps_per_s"])
            print(f"run {i + 1} {who}: {res['steps_per_s']:,.0f} env steps/s, compile {res['compile_s']:.1f} s, "
                  f"final greedy {res['final_greedy']:.2f}", flush=True)
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["theirs"])
    print(f"{args.alg} on cramped_room: ours {ours:,.0f}, JaxMARL {theirs:,.0f} env steps/s (medians of "
          f"{args.repeat}): {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
