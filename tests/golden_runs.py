"""Golden runs: short fixed training runs of every algorithm in every variant, whose metrics (and a checksum
of the final parameters) are kept in ``tests/golden/golden_metrics.npz``. A change that must not change
results (a refactor) is checked by ``tests/test_golden.py`` (marked slow) against that file:

    python tests/golden_runs.py write          # (re)write the file from the code as it is now
    python tests/golden_runs.py check          # compare the code as it is now with the file
    python -m pytest -m slow tests/test_golden.py

The runs compile at XLA's backend optimisation level 0 like the rest of the suite (tests/conftest.py) and
bit-identity is only expected on the same kind of machine and the same jax/jaxlib versions, so the file
records both, and the check says when they differ.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Tuple

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import numpy as np  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_metrics.npz"
PREY = "pkg:checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors"
SEED = 11

REPLAY = dict(NUM_ENVS=2, NUM_STEPS=8, TOTAL_TIMESTEPS=2 * 8 * 6, BUFFER_SIZE=32, BUFFER_BATCH_SIZE=4,
              AGENT_HIDDEN_DIM=16, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=2, TEST_NUM_ENVS=4,
              TEST_NUM_STEPS=26, TEST_INTERVAL=0.34, EPSILON_ANNEAL_TIME=64, LOG_AGENTS_SEPARATELY=True)
MIXER = dict(MIXER_EMBEDDING_DIM=8, MIXER_HYPERNET_HIDDEN_DIM=16)
PQN = dict(NUM_ENVS=4, NUM_STEPS=8, TOTAL_TIMESTEPS=4 * 8 * 6, AGENT_HIDDEN_DIM=16, NUM_EPOCHS=2,
           NUM_MINIBATCHES=2, TEST_NUM_ENVS=4, TEST_NUM_STEPS=26, TEST_INTERVAL=0.34, EPSILON_ANNEAL_TIME=100,
           LOG_AGENTS_SEPARATELY=True)
SPREAD = {"ENV_NAME": "MPE_simple_spread_v3"}
TAG = {"ENV_NAME": "MPE_simple_tag_v3"}
SMAX = {"ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "3m"}


def runs() -> Dict[str, Tuple[str, dict, bool]]:
    """name -> (module, config, takes the shipped prey as a frozen agent)."""
    out = {}
    for alg in ("iql", "vdn", "qmix"):
        extra = MIXER if alg == "qmix" else {}
        out[f"{alg}_ps"] = (f"{alg}_ps", {**SPREAD, **REPLAY, **extra}, False)
        out[f"{alg}_ns"] = (f"{alg}_ns", {**SPREAD, **REPLAY, **extra, "AGENT_TYPE": "ff"}, False)
        out[f"{alg}_ps_pretrained"] = (f"{alg}_ps_pretrained", {**TAG, **REPLAY, **extra}, True)
    out["qmix_ps_smax"] = ("qmix_ps", {**SMAX, **REPLAY, **MIXER}, False)
    out["pqn_ps"] = ("pqn_ps", {**SPREAD, **PQN}, False)
    out["pqn_ps_none"] = ("pqn_ps", {**SPREAD, **PQN, "MIXER": "none"}, False)
    out["pqn_ns"] = ("pqn_ns", {**SPREAD, **PQN, "AGENT_TYPE": "rnn", "MEMORY_WINDOW": 4, "NUM_LAYERS": 1}, False)
    out["pqn_ps_pretrained"] = ("pqn_ps_pretrained", {**TAG, **PQN}, True)
    return out


def one_run(module: str, config: dict, with_prey: bool) -> Dict[str, np.ndarray]:
    """Every metric of one run, and ``params_sum`` / ``params_count`` of its final parameters."""
    import importlib

    import jax

    from purejaxql.environments import make_env

    mod = importlib.import_module(f"purejaxql.{module}")
    env = make_env(config)
    cfg = {k: v for k, v in config.items() if k not in ("ENV_NAME", "MAP_NAME")}
    from purejaxql.checkpoint import agent_params, resolve_path
    frozen = ({"agent_0": agent_params(resolve_path(PREY), "agent_0")},) if with_prey else ()
    out = jax.jit(mod.make_train(cfg, env, *frozen))(jax.random.PRNGKey(SEED))
    result = {k: np.asarray(v) for k, v in out["metrics"].items()}
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(out["runner_state"].train.params)]
    result["params_sum"] = np.array(sum(float(x.sum()) for x in leaves))
    result["params_count"] = np.array(sum(x.size for x in leaves))
    return result


def environment() -> Dict[str, str]:
    import platform

    import jax
    import jaxlib
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "machine": platform.machine(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


def compute() -> Dict[str, np.ndarray]:
    flat = {}
    for name, (module, config, prey) in runs().items():
        for k, v in one_run(module, config, prey).items():
            flat[f"{name}/{k}"] = v
        print(f"golden: {name} done", flush=True)
    return flat


def differences(golden: Dict[str, np.ndarray], now: Dict[str, np.ndarray]):
    """Keys missing on either side, and arrays that differ in any bit."""
    out = [f"{k}: only in the golden file" for k in sorted(set(golden) - set(now))]
    out += [f"{k}: not in the golden file" for k in sorted(set(now) - set(golden))]
    for k in sorted(set(golden) & set(now)):
        a, b = golden[k], now[k]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            out.append(f"{k}: {a.ravel()[:4]} (golden) vs {b.ravel()[:4]} (now)")
    return out


def load() -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    with np.load(GOLDEN) as z:
        data = {k: z[k] for k in z.files}
    env = {k[len("env/"):]: str(data.pop(k)) for k in list(data) if k.startswith("env/")}
    return data, env


def main(argv):
    what = argv[0] if argv else "check"
    if what == "write":
        flat = compute()
        GOLDEN.parent.mkdir(exist_ok=True)
        np.savez_compressed(GOLDEN, **flat, **{f"env/{k}": np.array(v) for k, v in environment().items()})
        print(f"golden: wrote {len(flat)} arrays of {len(runs())} runs to {GOLDEN}")
        return 0
    golden, env = load()
    bad = differences(golden, compute())
    if env != environment():
        print(f"golden: note: written with {env}, now {environment()}")
    print("\n".join(bad) if bad else f"golden: all {len(runs())} runs identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
