"""Side by side with JaxMARL's own Q-learning scripts: env steps/s of one seed, same settings, alternating runs.

JaxMARL's scripts (github FLAIROx/JaxMARL, ``baselines/QLearning``; ``git archive HEAD baselines/QLearning`` of a
snapshot, see ../shared/anchors/) against this project's modules, each given the same settings:

* ``--workload mpe`` (``--alg iql|vdn|qmix|pqn``): MPE_simple_spread_v3 with JaxMARL's ``ql_rnn_mpe`` (their
  ``{alg}_rnn.py``; ours ``+alg={alg}_mpe``) or ``pqn_vdn_ff_mpe`` (their ``pqn_vdn_ff.py``; ours ``+alg=pqn_mpe``),
  ``--timesteps`` env steps (default 5e5).
* ``--workload smax`` (``--alg iql|vdn|qmix``): SMAX 3m at the CPU-sized config (JaxMARL's ``ql_rnn_smax`` with
  GRU 64, 1 gradient step per update, LR 1e-3, mixer 32 / 64; ours ``+alg={alg}_smax_cpu``), default 3e5 steps;
  ``--map 2s3z`` for another map.
* ``--workload overcooked`` (``--alg iql|vdn|pqn``): cramped_room with their ``{alg}_cnn_overcooked.py`` /
  ``pqn_vdn_cnn_overcooked.py`` against ours ``+alg={alg}_overcooked``, both at CPU sizes (OVERCOOKED below:
  fewer envs, a narrower network, fewer gradient steps than the GPU configs).

Each run is a fresh process (ours and theirs alternating, ``--repeat`` times; medians printed). Theirs is
timed as their scripts run it, ``jax.jit(jax.vmap(make_train(config, env)))`` on one key; ours as the CLI runs
one seed, ``jax.jit(make_train(config, env))`` unbatched. Compile and run are timed apart: env steps/s =
TOTAL_TIMESTEPS / run seconds (greedy evaluations inside both, same sizes).

    python bench/vs_jaxmarl.py --jaxmarl DIR/baselines/QLearning --workload smax --alg qmix --repeat 3
    python bench/vs_jaxmarl.py --jaxmarl DIR/baselines/QLearning --workload overcooked --alg pqn
    python bench/vs_jaxmarl.py --jaxmarl DIR/baselines/QLearning --workload smax --map 2s3z --timesteps 3e6 \
        --repeat 1 --seed 2     # one seed's final greedy return and win rate on each side

Each line also prints the final greedy evaluation (team return, and win rate on SMAX): theirs is the last
evaluation their replay scripts keep in ``runner_state`` (they return no metrics), ours the last of our metrics.

Differences that remain: their time-outs are terminal (ours leave the time-out step out of the loss);
Overcooked: JaxMARL's CNN ends in a Dense 64 before the Q head (ours feeds the convolutions to the first hidden
Dense), their replay stores transitions (ours chunks of NUM_STEPS steps, here 1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench import compile_and_run  # noqa: E402
# CPU-sized Overcooked settings given to both (JaxMARL's key names; ours are mapped in ours_config)
OVERCOOKED = {
    "pqn": dict(TOTAL_TIMESTEPS=2 ** 15, NUM_ENVS=32, NUM_STEPS=16, NUM_MINIBATCHES=4, NUM_EPOCHS=2,
                HIDDEN_SIZE=128, NUM_LAYERS=2, TEST_NUM_ENVS=8, TEST_INTERVAL=0.5, TEST_NUM_STEPS=400),
    "vdn": dict(TOTAL_TIMESTEPS=2 ** 13, NUM_ENVS=32, NUM_STEPS=1, BUFFER_SIZE=10000, BUFFER_BATCH_SIZE=32,
                NUM_EPOCHS=1, HIDDEN_SIZE=64, LEARNING_STARTS=1000, TEST_NUM_ENVS=8, TEST_INTERVAL=0.5,
                TEST_NUM_STEPS=400),
}
OVERCOOKED["iql"] = OVERCOOKED["vdn"]
# the CPU-sized SMAX config (ours: base/ql_smax_cpu.yaml) in JaxMARL's key names
SMAX_CPU = dict(MAP_NAME="3m", HIDDEN_SIZE=64, NUM_EPOCHS=1, LR=0.001, MIXER_EMBEDDING_DIM=32,
                MIXER_HYPERNET_HIDDEN_DIM=64)
# (workload, alg) -> (their module, their alg config, our alg config)
PAIRS = {
    **{("mpe", a): (f"{a}_rnn", "ql_rnn_mpe", f"{a}_mpe") for a in ("iql", "vdn", "qmix")},
    ("mpe", "pqn"): ("pqn_vdn_ff", "pqn_vdn_ff_mpe", "pqn_mpe"),
    **{("smax", a): (f"{a}_rnn", "ql_rnn_smax", f"{a}_smax_cpu") for a in ("iql", "vdn", "qmix")},
    ("overcooked", "pqn"): ("pqn_vdn_cnn_overcooked", "pqn_vdn_cnn_overcooked", "pqn_overcooked"),
    **{("overcooked", a): (f"{a}_cnn_overcooked", "ql_cnn_overcooked", f"{a}_overcooked") for a in ("iql", "vdn")},
}
DEFAULT_TIMESTEPS = {"mpe": 5e5, "smax": 3e5}


def sizes(workload: str, alg: str, timesteps: float, smax_map: str = "3m") -> dict:
    """The settings both sides get on top of their configs (JaxMARL's key names)."""
    if workload == "overcooked":
        return dict(OVERCOOKED[alg])
    extra = dict(SMAX_CPU, MAP_NAME=smax_map) if workload == "smax" else {}
    return {**extra, "TOTAL_TIMESTEPS": timesteps or DEFAULT_TIMESTEPS[workload]}


def theirs_run(jaxmarl: str, workload: str, alg: str, timesteps: float, smax_map: str, seed: int) -> dict:
    import jax
    import yaml
    sys.path.insert(0, jaxmarl)
    module_name, config_name, _ = PAIRS[workload, alg]
    module = __import__(module_name)
    with open(os.path.join(jaxmarl, "config", "config.yaml")) as f:
        config = yaml.safe_load(f)
    with open(os.path.join(jaxmarl, "config", "alg", f"{config_name}.yaml")) as f:
        config.update(yaml.safe_load(f))
    config = {k: number(v) for k, v in config.items()}   # yaml reads 5e6 as a string (hydra as a float)
    config.update(sizes(workload, alg, timesteps, smax_map), WANDB_MODE="disabled", NUM_SEEDS=1)
    if workload == "overcooked":
        config["ENV_KWARGS"] = {"layout": "cramped_room"}
    env, _ = module.env_from_config(dict(config, ENV_KWARGS=dict(config.get("ENV_KWARGS") or {})))
    return timed(jax.vmap(module.make_train(config, env)), config["TOTAL_TIMESTEPS"], seed, batched=True)


def number(v):
    """A yaml string that is a number (2.5e6) as a float, anything else unchanged."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def ours_config(workload: str, alg: str, timesteps: float, smax_map: str = "3m") -> dict:
    from purejaxql.cli import compose
    cfg = compose([f"+alg={PAIRS[workload, alg][2]}"])["alg"]
    cfg.pop("TUNE", None)
    given = sizes(workload, alg, timesteps, smax_map)
    if workload == "smax":  # ours already carries the CPU sizes (qmix_smax_cpu); only the map and budget are given
        given = {"TOTAL_TIMESTEPS": given["TOTAL_TIMESTEPS"], "MAP_NAME": smax_map}
    if "HIDDEN_SIZE" in given:
        given["AGENT_HIDDEN_DIM"] = given.pop("HIDDEN_SIZE")
    return {**cfg, **given}


def ours_run(workload: str, alg: str, timesteps: float, smax_map: str, seed: int) -> dict:
    import importlib

    from purejaxql.environments import make_env
    cfg = ours_config(workload, alg, timesteps, smax_map)
    env = make_env(cfg)
    module = importlib.import_module(f"purejaxql.{alg}_ps")
    train = module.make_train({k: v for k, v in cfg.items() if k not in ("ENV_NAME", "ENV_KWARGS")}, env)
    return timed(train, cfg["TOTAL_TIMESTEPS"], seed, batched=False)


def final_evaluation(out) -> dict:
    """{"returned_episode_returns": .., "returned_won_episode": ..} of the last greedy evaluation (NaN where absent):
    our metrics' last entry, or the evaluation JaxMARL's replay scripts keep in ``runner_state[2]``."""
    import numpy as np
    metrics = out.get("metrics") or {}
    last = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")}
    if not last and isinstance(out.get("runner_state"), (tuple, list)) and len(out["runner_state"]) > 2 and (
            isinstance(out["runner_state"][2], dict)):
        last = out["runner_state"][2]
    keys = ("returned_episode_returns", "returned_won_episode")
    return {k: float(np.asarray(last[k]).reshape(-1)[-1]) if k in last else float("nan") for k in keys}


def timed(program, steps, seed: int, batched: bool) -> dict:
    import jax
    keys = jax.random.split(jax.random.PRNGKey(seed), 1)
    keys = keys if batched else keys[0]
    out, compile_s, run_s = compile_and_run(program, keys)
    ev = final_evaluation(out)
    return {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / run_s,
            "final_greedy": ev["returned_episode_returns"], "win_rate": ev["returned_won_episode"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jaxmarl", required=True, help="JaxMARL's baselines/QLearning folder")
    p.add_argument("--workload", choices=("mpe", "smax", "overcooked"), default="overcooked")
    p.add_argument("--alg", choices=("iql", "vdn", "qmix", "pqn"), default="pqn")
    p.add_argument("--timesteps", type=float, default=0.0, help="env steps (mpe: 5e5, smax: 3e5; overcooked: fixed)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--map", default="3m", help="SMAX map (--workload smax)")
    p.add_argument("--seed", type=int, default=0, help="both sides train on split(PRNGKey(seed), 1)[0]")
    p.add_argument("--worker", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.workload, args.alg) not in PAIRS:
        p.error(f"--alg {args.alg} has no JaxMARL counterpart on --workload {args.workload}")
    if args.worker:
        run = ours_run if args.worker == "ours" else (lambda *a: theirs_run(args.jaxmarl, *a))
        print("RESULT " + json.dumps(run(args.workload, args.alg, args.timesteps, args.map, args.seed)), flush=True)
        return 0
    script = PAIRS[args.workload, args.alg][0]
    if not os.path.isfile(os.path.join(args.jaxmarl, f"{script}.py")):
        p.error(f"--jaxmarl {args.jaxmarl}: no {script}.py there (JaxMARL's baselines/QLearning)")
    rates = {"ours": [], "theirs": []}
    compiles = {"ours": [], "theirs": []}
    for i in range(args.repeat):
        for who in ("ours", "theirs"):
            r = subprocess.run([sys.executable, __file__, "--jaxmarl", args.jaxmarl, "--workload", args.workload,
                                "--alg", args.alg, "--timesteps", str(args.timesteps), "--map", args.map,
                                "--seed", str(args.seed), "--worker", who],
                               capture_output=True, text=True, cwd=ROOT)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(f"{who} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            res = json.loads(line[0][7:])
            rates[who].append(res["steps_per_s"])
            compiles[who].append(res["compile_s"])
            print(f"run {i + 1} {who}: {res['steps_per_s']:,.0f} env steps/s, compile {res['compile_s']:.1f} s, "
                  f"final greedy {res['final_greedy']:.2f}, win rate {res['win_rate']:.3f}", flush=True)
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["theirs"])
    print(f"{args.alg} on {args.workload}: ours {ours:,.0f}, JaxMARL {theirs:,.0f} env steps/s (medians of "
          f"{args.repeat}): {ours / theirs:.2f}x; compile ours {statistics.median(compiles['ours']):.1f} s, "
          f"JaxMARL {statistics.median(compiles['theirs']):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
