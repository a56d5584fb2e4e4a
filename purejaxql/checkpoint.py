"""Checkpoints of trained agents: safetensors files (tensors + a JSON header), never a pickled object,
so loading a stranger's checkpoint cannot run code.

A checkpoint holds one seed's ``{"agent": ..., "mixer": ...}`` parameters, flattened to ``a/b/c`` names,
and in its header a JSON record: algorithm module, env, agent names, seed, the run's resolved config and
the key of the run's final greedy evaluation (so ``EVAL_ONLY`` can reproduce it). The same config is
written beside it as YAML for people.

    from purejaxql.checkpoint import load_params
    params = load_params("models/MPE_simple_tag_v3/iql_ps/seed0_0.safetensors")  # {"agent", "mixer"}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from purejaxql.config import ConfigError

__all__ = ["save_checkpoint", "load_params", "load_checkpoint", "agent_params", "checkpoint_path"]
HEADER_KEY = "purejaxql"


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
    from safetensors.numpy import save_file
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(flatten(params), str(tmp), metadata={HEADER_KEY: json.dumps(info)})
    os.replace(tmp, path)
    ytmp = path.with_suffix(".yaml.tmp")
    ytmp.write_text(yaml.safe_dump({k: v for k, v in info.items() if k != "final_eval_key"}, sort_keys=False))
    os.replace(ytmp, path.with_suffix(".yaml"))
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
