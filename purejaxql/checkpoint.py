"""Checkpoints: safetensors files (tensors + a JSON header), never a pickled object, so loading a stranger's
checkpoint cannot run code. This module writes and reads both kinds, and every file of a run folder goes
through its atomic write (:func:`write_text`, :func:`write_json`).

* ``params``: one seed's final parameters ``{"agent": ..., "mixer": ...}`` (``seed<SEED>_<i>.safetensors``
  + its info as YAML for people). Info: module, algorithm, variant, env, agents, seed, resolved config, the
  key of the run's final greedy evaluation (so ``EVAL_ONLY`` can reproduce it).
* ``state``: the training state after U updates (``<run folder>/checkpoints/state_u<U>.safetensors``): every
  runner leaf (parameters, target parameters, optimiser state, replay buffer, env and hidden states, RNG
  keys, a typed key as its key data, counters) and the metrics so far. Loading checks each leaf's shape and
  dtype against the state the program expects.

Header: one metadata entry, ``"purejaxql"``: JSON ``{"format": FORMAT, "kind": "params" | "state", **info}``,
a state's with ``"updates_done"`` and ``"packed"`` too (info may not use these four names). Tensor names: a
leaf's pytree path joined with "/", its parts dict keys, NamedTuple / dataclass attribute names and sequence
indices: parameters from their root (``agent/params/Dense_0/kernel``), a state's leaves under ``state/``
(``state/runner/train/opt_state/0/mu/...``), its metrics under ``metrics/<name>``.

Packing (states): a replay buffer's ``experience`` is stored up to its filled length on the time axis (the
rest is the zeros of its ``init``, put back on loading), and a tensor of COMPRESS_MIN_BYTES or more is
zlib-compressed when that saves 10%; ``"packed"`` {name: recipe} says how to rebuild them. The file stays a
plain safetensors file. Writing: under ``<name>.tmp``, flushed, renamed into place, so a failed or killed
write leaves the previous version and no temporary file; files follow the umask. A checkpoint the disk has
no room for (+ FREE_SPACE_MARGIN) is refused before writing, ENOSPC / EDQUOT while writing is reported the
same way: :class:`NotEnoughSpace`.

Older files load too: parameters from before ``"format"`` (header ``"purejaxql"`` holding the info alone,
names as above) and states ``purejaxql-train-state/1`` and ``/2`` (header key ``"purejaxql_state"``, tensors
named ``"state" + jax.tree_util.keystr(path)``: ``state.train.params['agent']``).

    from purejaxql.checkpoint import load_params
    params = load_params("models/MPE_simple_tag_v3/iql_ps/seed0_0.safetensors")  # {"agent", "mixer"}
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml
from safetensors import safe_open
from safetensors.numpy import save

from purejaxql.atomic_files import NotEnoughSpace, atomic_write, write_json, write_text
from purejaxql.config import ConfigError

__all__ = ["save_checkpoint", "load_params", "load_checkpoint", "agent_params", "resolve_path", "checkpoint_path",
           "save_state", "load_state", "state_header", "state_files", "latest_state", "buffer_fill", "atomic_write",
           "write_text", "write_json", "pack_tensors", "unpack_tensor", "NotEnoughSpace", "free_bytes"]
HEADER_KEY = "purejaxql"
FORMAT = "purejaxql/3"  # /3: one scheme for parameters and states
SCHEME_FIELDS = ("format", "kind", "updates_done", "packed")
LEGACY_STATE_KEY = "purejaxql_state"
LEGACY_STATE_FORMATS = ("purejaxql-train-state/1", "purejaxql-train-state/2")  # /2 added packing
STATE_RE = re.compile(r"^state_u(\d+)\.safetensors$")
FREE_SPACE_MARGIN = 16 * 2**20  # bytes a checkpoint must leave free (metrics, summary, plots, final parameters)
COMPRESS_MIN_BYTES = 4096       # smaller tensors are stored as they are
COMPRESS_KEEP_RATIO = 0.9       # a tensor is stored compressed when that saves at least 10%
_HOLDS = {"params": "a seed's final parameters (EVAL_ONLY and PRETRAINED_AGENTS read it)",
          "state": "a training state (RESUME=<its run folder> continues it)"}


# ---------------------------------------------------------------------------------------------- writing


def free_bytes(folder: os.PathLike) -> int:
    return shutil.disk_usage(folder).free


def _write(path: Path, kind: str, tensors: Dict[str, np.ndarray], info: Dict[str, Any], **fields) -> Path:
    """Write a checkpoint of ``kind`` atomically, once the disk is known to have room for it (plus
    FREE_SPACE_MARGIN); else :class:`NotEnoughSpace` names the folder, the bytes needed and the bytes free."""
    clash = sorted(set(info) & set(SCHEME_FIELDS))
    if clash:
        raise ValueError(f"a checkpoint's info may not use the header fields {clash}")
    header = {"format": FORMAT, "kind": kind, **fields, **info}
    data = save(tensors, metadata={HEADER_KEY: json.dumps(header)})
    path.parent.mkdir(parents=True, exist_ok=True)
    free = free_bytes(path.parent)
    if len(data) + FREE_SPACE_MARGIN > free:
        raise NotEnoughSpace(f"not enough free space in {path.parent} for {path.name}: it needs {len(data):,} "
                             f"bytes (+ {FREE_SPACE_MARGIN:,} kept free), {free:,} are free")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


# ---------------------------------------------------------------------------------------------- packing


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


# ----------------------------------------------------------------------------------------- names, reading


def _name(path, root: Tuple[str, ...] = ()) -> str:
    """A pytree path (jax.tree_util keys) -> its tensor name: the parts joined with "/" after ``root``."""
    import jax.tree_util as tu
    parts = (k.name if isinstance(k, tu.GetAttrKey) else k.idx if isinstance(k, tu.SequenceKey) else k.key
             for k in path)  # k.key: DictKey, FlattenedIndexKey
    return "/".join([*root, *map(str, parts)])


def _tensors(tree, root: Tuple[str, ...] = ()) -> Dict[str, np.ndarray]:
    """{tensor name: array} of a pytree's leaves, a typed PRNG key as its key data."""
    import jax
    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = _name(path, root)
        if name in out:
            raise ValueError(f"two leaves of the tree are both named {name!r}")
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out[name] = np.asarray(x, order="C")  # (ascontiguousarray would make a 0-d leaf 1-d)
    return out


class _Foreign(ValueError):
    """A safetensors file without a readable header of the kind of checkpoint asked for."""


def _header(meta: Dict[str, str], kind: str) -> Dict[str, Any]:
    """A file's header, whatever its format, as {"format", "kind", ...}; :class:`_Foreign` if it is not a
    readable checkpoint of ``kind``."""
    if HEADER_KEY in meta:
        header = json.loads(meta[HEADER_KEY])
        if "kind" not in header:  # parameters written before FORMAT: the header is the info alone
            header = {"format": None, "kind": "params", **header}
        elif header.get("format") != FORMAT:
            raise _Foreign(f"format {header.get('format')!r}, which this version does not read")
    elif LEGACY_STATE_KEY in meta:
        header = {"kind": "state", **json.loads(meta[LEGACY_STATE_KEY])}
        if header.get("format") not in LEGACY_STATE_FORMATS:
            raise _Foreign(f"format {header.get('format')!r}, which this version does not read")
    else:
        raise _Foreign("no purejaxql header")
    if header["kind"] != kind:
        raise _Foreign(f"it holds {_HOLDS.get(header['kind'], repr(header['kind']))}")
    return header


def _read(path: Path, kind: str, tensors: bool) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """-> (header, {name: tensor, unpacked} or {} when not ``tensors``)."""
    with safe_open(str(path), framework="numpy") as f:
        header = _header(f.metadata() or {}, kind)
        if not tensors:
            return header, {}
        packed = header.get("packed") or {}
        return header, {k: unpack_tensor(k, f.get_tensor(k), packed[k]) if k in packed else f.get_tensor(k)
                        for k in f.keys()}


# ------------------------------------------------------------------------------------------- parameters


def resolve_path(path: str) -> str:
    """``pkg:rel/path`` names a file shipped inside the purejaxql package (the prey:
    ``pkg:checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors``); other paths are as given."""
    return str(files("purejaxql").joinpath(str(path)[4:])) if str(path).startswith("pkg:") else str(path)


def checkpoint_path(save_path: str, env_name: str, module: str, seed: int, index: int) -> Path:
    """``{SAVE_PATH}/{env}/{module}/seed{SEED}_{i}.safetensors`` (i: the seed's index among NUM_SEEDS)."""
    return Path(save_path) / env_name / module / f"seed{seed}_{index}.safetensors"


def save_checkpoint(path: os.PathLike, params: Dict[str, Any], info: Dict[str, Any]) -> Path:
    """Write params and ``info`` (JSON-able: module, env, agents, seed, config, ...) atomically, plus the
    info as YAML beside it (less the evaluation key)."""
    path = _write(Path(path), "params", _tensors(params), info)
    write_text(path.with_suffix(".yaml"),
               yaml.safe_dump({k: v for k, v in info.items() if k != "final_eval_key"}, sort_keys=False))
    return path


def load_checkpoint(path: os.PathLike) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """-> (params {"agent", "mixer"} as numpy arrays, the info it was saved with). Bad input raises
    :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        header, flat = _read(path, "params", tensors=True)
    except _Foreign as e:
        raise ConfigError(f"{str(path)!r} is a safetensors file but not a purejaxql checkpoint of parameters "
                          f"({e})") from None
    except Exception as e:  # safetensors raises its own error types for a malformed file
        raise ConfigError(f"{str(path)!r} is not a safetensors checkpoint ({type(e).__name__}: {e})") from None
    tree: Dict[str, Any] = {}
    for name, x in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = x
    return tree, {k: v for k, v in header.items() if k not in ("format", "kind")}


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


# ---------------------------------------------------------------------------------------------- states


def _is_buffer(x) -> bool:
    return all(hasattr(x, f) for f in ("experience", "current_index", "is_full"))


def buffer_fill(tree) -> Dict[str, Tuple[int, int]]:
    """The replay buffers in a state (flashbax trajectory buffers: ``experience`` leaves shaped (*runs, add
    batch, time, ...), ``current_index`` and ``is_full`` shaped (*runs)) -> {leaf name (from ``tree``'s
    root): (time axis, filled length)}. Until a buffer is full, time steps from ``current_index`` on still
    hold the zeros of its ``init``; the filled length is the largest over the runs."""
    import jax
    out = {}
    for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_buffer)[0]:
        if not _is_buffer(node):
            continue
        index, full = np.asarray(node.current_index), np.asarray(node.is_full)
        axis = index.ndim + 1
        for sub, x in jax.tree_util.tree_flatten_with_path(node.experience)[0]:
            n = x.shape[axis] if full.any() else int(index.max(initial=0))
            out[_name((*path, jax.tree_util.GetAttrKey("experience"), *sub))] = (axis, n)
    return out


def state_files(folder: os.PathLike) -> List[Path]:
    """State checkpoints of a run folder, oldest first (temporary files are not checkpoints)."""
    ck = Path(folder) / "checkpoints"
    found = [(int(m.group(1)), p) for p in ck.glob("state_u*.safetensors") if (m := STATE_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_state(folder: os.PathLike) -> Optional[Path]:
    files = state_files(folder)
    return files[-1] if files else None


def save_state(folder: os.PathLike, runner, history: Dict[str, np.ndarray], updates_done: int,
               info: Dict[str, Any], keep: int) -> Path:
    """Write the runner state after ``updates_done`` updates and the metrics so far to ``folder/checkpoints/
    state_u<updates_done>.safetensors``, then delete all but the newest ``keep`` state checkpoints.
    :class:`NotEnoughSpace` (nothing written, nothing deleted) when the disk has no room for it."""
    tensors = {**_tensors(runner, ("state",)), **_tensors(dict(history), ("metrics",))}
    filled = {"state/" + name: rule for name, rule in buffer_fill(runner).items()}
    tensors, packed = pack_tensors(tensors, filled)
    path = Path(folder) / "checkpoints" / f"state_u{updates_done:09d}.safetensors"
    _write(path, "state", tensors, info, updates_done=int(updates_done), packed=packed)
    for old in state_files(folder)[:-keep]:
        old.unlink()
    return path


def _state_error(path: Path, e: Exception) -> ConfigError:
    why = str(e) if isinstance(e, _Foreign) else f"{type(e).__name__}: {e}"
    return ConfigError(f"state checkpoint {str(path)!r} is corrupt or not a purejaxql training state ({why}); "
                       "delete it to resume from the one before")


def state_header(path: os.PathLike) -> Dict[str, Any]:
    """A state checkpoint's header, read without its tensors: format, kind, updates_done, packed, info."""
    try:
        return _read(Path(path), "state", tensors=False)[0]
    except Exception as e:
        raise _state_error(Path(path), e) from None


def load_state(path: os.PathLike, template) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, Any]]:
    """-> (runner state shaped like ``template``, metrics so far, header). A file that is not a complete
    state checkpoint of this program raises :class:`ConfigError` naming the file and the problem."""
    import jax
    import jax.numpy as jnp

    path = Path(path)
    try:
        header, stored = _read(path, "state", tensors=True)
    except Exception as e:
        raise _state_error(path, e) from None
    legacy = header["format"] in LEGACY_STATE_FORMATS
    leaves = []
    for p, want in jax.tree_util.tree_flatten_with_path(template)[0]:
        name = "state" + jax.tree_util.keystr(p) if legacy else _name(p, ("state",))
        x = stored.get(name)
        is_key = jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key)
        shape, dtype = (jax.eval_shape(jax.random.key_data, want).shape, np.uint32) if is_key else \
            (want.shape, want.dtype)
        if x is None or x.shape != tuple(shape) or x.dtype != dtype:
            got = "missing" if x is None else f"{x.dtype}{list(x.shape)}"
            raise ConfigError(f"state checkpoint {str(path)!r} does not fit this run: {name} is {got}, the "
                              f"program expects {np.dtype(dtype)}{list(shape)}")
        leaves.append(jax.random.wrap_key_data(jnp.asarray(x)) if is_key else jnp.asarray(x))
    history = {k[len("metrics/"):]: v for k, v in stored.items() if k.startswith("metrics/")}
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves), history, header
