"""Checkpoints of trained agents: safetensors files (tensors + a JSON header), never a pickled object,
so loading a stranger's checkpoint cannot run code.

A checkpoint holds one seed's ``{"agent": ..., "mixer": ...}`` parameters, flattened to ``a/b/c`` names,
and in its header a JSON record: algorithm module, env, agent names, seed, the run's resolved config and
the key of the run's final greedy evaluation (so ``EVAL_ONLY`` can reproduce it). The same config is
written beside it as YAML for people.

    from purejaxql.checkpoint import load_params
    params = load_params("models/MPE_simple_tag_v3/iql_ps/seed0_0.safetensors")  # {"agent", "mixer"}

The writing layer is shared with the run folder's state checkpoints (purejaxql.run_folder): every file is
written under a temporary name, flushed and renamed into place (a failed write leaves no temporary file and
the previous version of the file), follows the user's umask, and is refused up front, with
:class:`NotEnoughSpace`, when the disk has no room for it. Large tensors can be stored packed
(:func:`pack_tensors`): cut to their filled part along one axis and/or zlib-compressed, with the recipe in
the header; the file stays a plain safetensors file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np

from purejaxql.config import ConfigError

__all__ = ["save_checkpoint", "load_params", "load_checkpoint", "agent_params", "checkpoint_path", "atomic_write",
           "write_safetensors", "pack_tensors", "unpack_tensor", "NotEnoughSpace", "free_bytes"]
HEADER_KEY = "purejaxql"
FREE_SPACE_MARGIN = 16 * 2**20  # bytes a checkpoint must leave free (metrics, summary, plots, final parameters)
COMPRESS_MIN_BYTES = 4096       # smaller tensors are stored as they are
COMPRESS_KEEP_RATIO = 0.9       # a tensor is stored compressed when that saves at least 10%


class NotEnoughSpace(ConfigError):
    """The disk has no room for a checkpoint (found before writing it, or ENOSPC / EDQUOT while writing);
    nothing of the new file is left behind."""


def free_bytes(folder: os.PathLike) -> int:
    return shutil.disk_usage(folder).free


def atomic_write(path: os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp_name)`` into ``<path>.tmp``, flush it to disk, rename it over ``path``. If anything fails the
    temporary file is removed and ``path`` keeps its previous version. New files get the umask's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # left by a killed run: reusing it would keep its old mode
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NotEnoughSpace(f"no space left in {path.parent} while writing {path.name} ({e.strerror}); "
                                 "the partial file was removed") from None
        raise
    return path


def write_safetensors(path: os.PathLike, tensors: Dict[str, np.ndarray], metadata: Dict[str, str]) -> int:
    """Write a safetensors file atomically after checking that the disk has room for it (plus
    FREE_SPACE_MARGIN); -> its size in bytes. Raises :class:`NotEnoughSpace` naming the folder, the bytes
    needed and the bytes free."""
    from safetensors.numpy import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata=metadata)
    free = free_bytes(path.parent)
    if len(data) + FREE_SPACE_MARGIN > free:
        raise NotEnoughSpace(f"not enough free space in {path.parent} for {path.name}: it needs {len(data):,} "
                             f"bytes (+ {FREE_SPACE_MARGIN:,} kept free), {free:,} are free")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(data)


def pack_tensors(tensors: Dict[str, np.ndarray], filled: Dict[str, Tuple[int, int]]
                 ) -> Tuple[Dict[str, np.ndarray], Dict[str, Dict[str, Any]]]:
    """Tensors as stored: ``filled`` {name: (axis, n)} keeps only the first n entries along ``axis`` (the
    rest must be zeros: :func:`unpack_tensor` puts zeros back), and a tensor of COMPRESS_MIN_BYTES or more
    is zlib-compressed (level 1) when that saves at least 10%. -> (stored tensors, recipes {name: how to
    rebuild it} for the tensors not stored as they are)."""
    stored, recipes = {}, {}
    for name, x in tensors.items():
        recipe: Dict[str, Any] = {}
        if name in filled and filled[name][1] < x.shape[filled[name][0]]:
            axis, n = filled[name]
            recipe.update(axis=axis, length=x.shape[axis])
            x = np.ascontiguousarray(x[(slice(None),) * axis + (slice(0, n),)])
        if x.nbytes >= COMPRESS_MIN_BYTES:
            z = zlib.compress(np.ascontiguousarray(x).data, 1)
            if len(z) <= COMPRESS_KEEP_RATIO * x.nbytes:
                recipe.update(zlib=True, dtype=x.dtype.name, shape=list(x.shape))
                x = np.frombuffer(z, np.uint8)
        stored[name] = x
        if recipe:
            recipes[name] = recipe
    return stored, recipes


def unpack_tensor(name: str, x: np.ndarray, recipe: Dict[str, Any]) -> np.ndarray:
    """Undo :func:`pack_tensors` for one tensor. A recipe that does not fit the data raises ValueError."""
    if recipe.get("zlib"):
        dtype, shape = _dtype(recipe["dtype"]), tuple(int(n) for n in recipe["shape"])
        size = int(np.prod(shape)) * dtype.itemsize
        d = zlib.decompressobj()
        raw = d.decompress(x.tobytes(), size + 1)  # bounded: a bad file cannot inflate without limit
        if len(raw) != size or not d.eof:
            raise ValueError(f"{name}: its compressed data do not hold {dtype}{list(shape)}")
        x = np.frombuffer(raw, dtype).reshape(shape)
    if "axis" in recipe:
        axis, length = int(recipe["axis"]), int(recipe["length"])
        if not 0 <= axis < x.ndim or length < x.shape[axis]:
            raise ValueError(f"{name}: cannot be {length} long on axis {axis} (stored {list(x.shape)})")
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, length - x.shape[axis])
        x = np.pad(x, pad)
    return x


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and friends
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, name))


def flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b/c": array}."""
    out: Dict[str, np.ndarray] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "/"))
        else:
            out[name] = np.ascontiguousarray(np.asarray(v))
    return out


def unflatten(flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for name, v in flat.items():
        node = tree
        *path, leaf = name.split("/")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def checkpoint_path(save_path: str, env_name: str, module: str, seed: int, index: int) -> Path:
    """``{SAVE_PATH}/{env}/{module}/seed{SEED}_{i}.safetensors`` (i: the seed's index among NUM_SEEDS)."""
    return Path(save_path) / env_name / module / f"seed{seed}_{index}.safetensors"


def save_checkpoint(path: os.PathLike, params: Dict[str, Any], info: Dict[str, Any]) -> Path:
    """Write params and ``info`` (JSON-able: module, env, agents, seed, config, ...) atomically, plus the
    config as YAML beside it."""
    import yaml

    path = Path(path)
    write_safetensors(path, flatten(params), {HEADER_KEY: json.dumps(info)})
    text = yaml.safe_dump({k: v for k, v in info.items() if k != "final_eval_key"}, sort_keys=False)
    atomic_write(path.with_suffix(".yaml"), lambda tmp: Path(tmp).write_text(text))
    return path


def load_checkpoint(path: os.PathLike) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """-> (params {"agent", "mixer"} as numpy arrays, info). Bad input raises :class:`ConfigError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a malformed file
        raise ConfigError(f"{str(path)!r} is not a safetensors checkpoint ({type(e).__name__}: {e})") from None
    if HEADER_KEY not in meta:
        raise ConfigError(f"{str(path)!r} is a safetensors file but not a purejaxql checkpoint (no header)")
    info = json.loads(meta[HEADER_KEY])
    return unflatten(flat), info


def load_params(path: os.PathLike) -> Dict[str, Any]:
    """The params pytree ``{"agent": ..., "mixer": ...}`` of a checkpoint."""
    return load_checkpoint(path)[0]


def agent_params(path: os.PathLike, agent: str) -> Dict[str, Any]:
    """The network parameters ``agent`` acted with in the checkpoint's run: the shared set of a ``_ps``
    checkpoint, the agent's own slice of a ``_ns`` one."""
    params, info = load_checkpoint(path)
    agents = info.get("agents", [])
    if agent not in agents:
        raise ConfigError(f"agent {agent!r} is not in checkpoint {str(path)!r} (its agents: {agents})")
    p = params["agent"]
    if info.get("variant") == "ns":
        i = agents.index(agent)
        p = _map(lambda x: x[i], p)
    return p


def _map(f, tree):
    return {k: _map(f, v) if isinstance(v, dict) else f(v) for k, v in tree.items()}
