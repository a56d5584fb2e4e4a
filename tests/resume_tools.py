"""Helpers of the resume tests (tests/test_resume*.py): the environment of their CLI processes, a run folder
as a crash would leave it, a valid perturbation of a state checkpoint, and the check that a resumed run
really continued from its checkpoint."""
import json
import os
import shutil
from pathlib import Path

import numpy as np

import purejaxql.checkpoint as ck


def use_compilation_cache(monkeypatch, folder, default_opt_level=False):
    """CLI processes started from now on (subprocess or tests/cli_cases.py) share JAX's persistent
    compilation cache in ``folder``: a resumed run loads the program its first run compiled instead of
    compiling it again (~10 s instead of ~30-45 s of CPU). ``default_opt_level``: without the
    --xla_backend_optimization_level=0 speed-up of tests/conftest.py (XLA's default level, as users run)."""
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(folder))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if default_opt_level:
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_backend_optimization_level")]
        monkeypatch.setenv("XLA_FLAGS", " ".join(flags))


def crash_copy(run: Path, dst: Path, at: int) -> Path:
    """``dst``: the finished run folder ``run`` (written with every state checkpoint kept) as a crash one
    update after its state checkpoint at update ``at`` would have left it: later state checkpoints, final
    parameters, summary, tune table gone, metrics.csv cut in the middle of a row, and the next state
    checkpoint half-written under its temporary name."""
    shutil.copytree(run, dst)
    folder = dst / "checkpoints"
    later = [p for p in ck.state_files(dst) if ck.state_header(p)["updates_done"] > at]
    assert later and (folder / f"state_u{at:09d}.safetensors").is_file(), sorted(p.name for p in folder.iterdir())
    later[0].with_name(later[0].name + ".tmp").write_bytes(later[0].read_bytes()[:1000])
    for p in [*later, *folder.glob("seed*")]:
        p.unlink()
    for name in ("summary.json", "tune.csv", "tune_plot.png"):
        (dst / name).unlink(missing_ok=True)
    lines = (dst / "metrics.csv").read_text().splitlines(keepends=True)
    col = lines[0].split(",").index("update")
    kept = [row for row in lines[1:] if int(row.split(",")[col]) <= at]
    cut = lines[1 + len(kept)]
    (dst / "metrics.csv").write_text("".join([lines[0], *kept, cut[:len(cut) // 2]]))
    return dst


STATE_KEY = "state/runner/rng"  # the RNG key every update of the CLI's program splits


def perturb_rng(path: Path) -> int:
    """Flip one bit of every run's RNG key in a state checkpoint: still a valid state, whose updates from
    the checkpoint on draw other random numbers. -> the checkpoint's update count."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(meta[ck.HEADER_KEY])
    assert STATE_KEY in tensors and STATE_KEY not in header["packed"], sorted(tensors)
    tensors[STATE_KEY] = tensors[STATE_KEY] ^ np.uint32(1)
    save_file(tensors, str(path), metadata=meta)
    return int(header["updates_done"])


def assert_resumed_from(reference: Path, perturbed: Path, at: int):
    """metrics.csv of a run resumed from a perturbed checkpoint at update ``at``: every row before ``at``
    equals the uninterrupted run's (they come from the checkpoint), every row from ``at`` on differs (they
    were computed from the perturbed state). A process that ignored the checkpoint and recomputed from
    update 0 would reproduce the uninterrupted run's rows."""
    ref, got = reference.read_text().splitlines(), perturbed.read_text().splitlines()
    assert got[0] == ref[0] and len(got) == len(ref), (len(got), len(ref))
    col = ref[0].split(",").index("update")
    updates = [int(r.split(",")[col]) for r in ref[1:]]
    assert [int(r.split(",")[col]) for r in got[1:]] == updates
    assert 0 < at < max(updates)
    same = [a == b for a, b in zip(ref[1:], got[1:])]
    assert all(s for s, u in zip(same, updates) if u < at), "rows before the checkpoint changed"
    assert not any(s for s, u in zip(same, updates) if u >= at), \
        [u for s, u in zip(same, updates) if s and u >= at]


def assert_same_params(a: Path, b: Path, names):
    """The final parameter checkpoints ``names`` of two run folders hold identical arrays."""
    import jax
    from purejaxql.checkpoint import load_params
    for name in names:
        x, y = load_params(a / "checkpoints" / name), load_params(b / "checkpoints" / name)
        assert jax.tree.structure(x) == jax.tree.structure(y), name
        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
            assert u.dtype == v.dtype and u.tobytes() == v.tobytes(), name


def params_differ(a: Path, b: Path, name) -> bool:
    import jax
    from purejaxql.checkpoint import load_params
    x, y = load_params(a / "checkpoints" / name), load_params(b / "checkpoints" / name)
    return any(u.tobytes() != v.tobytes() for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))
