"""Checkpoints as the code before the shared safetensors scheme (purejaxql/checkpoint.py FORMAT "purejaxql/3")
wrote them, for the backward-compatibility tests in tests/test_run_folder_units.py.

tests/fixtures/legacy/ holds three small files written by that old code itself, taken from git:

    state_format1.safetensors  run_folder.save_state of commit 7c09006 ("purejaxql-train-state/1": header key
                               "purejaxql_state", tensors named "state" + jax.tree_util.keystr(path), unpacked)
    state_format2.safetensors  run_folder.save_state of commit 42d6c91 ("purejaxql-train-state/2": the same,
                               with a replay buffer cut to its filled part and a zlib-compressed tensor)
    params_vdn_ns.safetensors  checkpoint.save_checkpoint of commit 42d6c91 (header key "purejaxql" holding
                               the info alone, tensors named a/b/c)

They hold :func:`legacy_state` / :data:`HISTORY` / :data:`STATE_INFO` after :data:`UPDATES` updates and
:func:`legacy_params` / :data:`PARAMS_INFO`. These are built from fixed numbers and numpy's legacy
RandomState only (no jax.random, whose bits may change between JAX versions), so the test can rebuild them
anywhere and compare what the new loader returns bit for bit. The state is a NamedTuple with a typed PRNG
key leaf, a tuple of NamedTuples, special float bit patterns and a buffer-like NamedTuple (the fields
buffer_fill recognises) that the /2 writer packed. Committed files, rather than a copy of the old writer in
the tests, prove compatibility with what the old code really wrote. To regenerate them (needs git and
the commits above): ``python tests/legacy_checkpoints.py``.
"""
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
S = 2        # runs: the leading axis of every state leaf
UPDATES = 3
SPECIAL_BITS = np.array([0x7FC00001, 0x80000000, 0x00000001, 0x7F800000], np.uint32)  # NaN payload, -0.0, ...
STATE_INFO = {"module": "qmix_ps", "env": "MPE_simple_spread_v3",
              "config": {"SEED": 0, "NUM_SEEDS": S, "alg": {"LR": 0.005, "BUFFER_SIZE": 16}}}
PARAMS_INFO = {"module": "vdn_ns", "algorithm": "vdn", "variant": "ns", "env": "MPE_simple_spread_v3",
               "agents": ["agent_0", "agent_1"], "seed": 3, "seed_index": 1, "num_seeds": 2,
               "pretrained_agents": {}, "final_test_return": -12.5, "final_eval_key": [11, 22],
               "config": {"SEED": 3, "AGENT_HIDDEN_DIM": 4, "LR": 0.005}}
HISTORY = {"env_step": np.array([[16, 32, 48]] * S, np.int32),
           "loss": np.array([[np.nan, 0.5, 0.25], [np.nan, 0.75, -0.0]], np.float32)}


class Adam(NamedTuple):
    count: np.ndarray
    mu: dict


class Train(NamedTuple):
    params: dict
    opt_state: tuple
    n_updates: np.ndarray


class Buffer(NamedTuple):  # a flashbax trajectory buffer's fields: buffer_fill packs its experience
    experience: dict
    current_index: np.ndarray
    is_full: np.ndarray


class Runner(NamedTuple):
    train: Train
    buffer: Buffer
    key: object      # typed PRNG key, key<fry>[S]
    rng: np.ndarray  # raw key data, uint32 (S, 2)
    first: np.ndarray


def legacy_state() -> Runner:
    import jax
    rs = np.random.RandomState(20240607)
    f32 = lambda *shape: rs.standard_normal((S,) + shape).astype(np.float32)  # noqa: E731
    params = {"agent": {"Dense_0": {"kernel": f32(3, 4), "bias": f32(4)},
                        "special": np.tile(SPECIAL_BITS.view(np.float32), (S, 1))}, "mixer": {"w": f32(2)}}
    opt = (Adam(count=np.array([5, 6], np.int32), mu={"agent": f32(3, 4)}), {"scale": f32(1)})
    index = np.array([3, 2], np.int32)  # time steps filled per run (of 8): the /2 writer stores 3 of them
    t = np.arange(8)[None, None, :, None]
    filled = t < index[:, None, None, None]
    experience = {"obs": np.where(filled, f32(2, 8, 3), 0).astype(np.float32),
                  "act": np.where(filled, rs.randint(0, 5, (S, 2, 8, 3)), 0).astype(np.int32),
                  "avail": np.where(filled[..., None], np.ones((S, 2, 8, 3, 40), np.float32), 0)}  # compresses
    key = jax.random.wrap_key_data(np.array([[1, 2], [3, 4]], np.uint32))
    return Runner(train=Train(params, opt, np.array([7, 8], np.int32)),
                  buffer=Buffer(experience, index, np.zeros(S, bool)), key=key,
                  rng=np.array([[0, 42], [0, 43]], np.uint32), first=np.array([True, False]))


def legacy_params():
    rs = np.random.RandomState(7)
    return {"agent": {"params": {"Dense_0": {"kernel": rs.standard_normal((2, 5, 4)).astype(np.float32),
                                             "bias": np.zeros((2, 4), np.float32)},
                                 "GRU_0": {"w_hn": rs.standard_normal((2, 4, 4)).astype(np.float32)}}},
            "mixer": {}}


def _old_modules(folder: Path):
    """The old writers, as modules old_checkpoint, old_run_folder_v1 and old_run_folder_v2 in ``folder``."""
    root = Path(__file__).parent.parent

    def show(commit, path):
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, check=True, capture_output=True,
                              text=True).stdout
    (folder / "old_checkpoint.py").write_text(show("42d6c91", "purejaxql/checkpoint.py"))
    (folder / "old_run_folder_v1.py").write_text(show("7c09006", "purejaxql/run_folder.py"))
    (folder / "old_run_folder_v2.py").write_text(show("42d6c91", "purejaxql/run_folder.py").replace(
        "from purejaxql.checkpoint import", "from old_checkpoint import"))
    sys.path.insert(0, str(folder))
    import old_checkpoint
    import old_run_folder_v1
    import old_run_folder_v2
    return old_checkpoint, old_run_folder_v1, old_run_folder_v2


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_ck, v1, v2 = _old_modules(tmp)
        for n, module in ((1, v1), (2, v2)):
            path = module.save_state(tmp / f"run{n}", legacy_state(), HISTORY, UPDATES, STATE_INFO, keep=1)
            assert module.state_header(path)["format"] == f"purejaxql-train-state/{n}"
            (FIXTURES / f"state_format{n}.safetensors").write_bytes(path.read_bytes())
        path = old_ck.save_checkpoint(tmp / "params.safetensors", legacy_params(), PARAMS_INFO)
        (FIXTURES / "params_vdn_ns.safetensors").write_bytes(path.read_bytes())
    for p in sorted(FIXTURES.iterdir()):
        print(p, p.stat().st_size)


if __name__ == "__main__":
    main()
