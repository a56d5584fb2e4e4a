"""Writing a file so that it is either wholly there or not at all: every file of a run folder (checkpoints,
config, metrics, summary) goes through :func:`atomic_write` (re-exported by :mod:`purejaxql.checkpoint`)."""
from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from purejaxql.config import ConfigError

__all__ = ["NotEnoughSpace", "atomic_write", "write_text", "write_json"]


class NotEnoughSpace(ConfigError):
    """The disk has no room for a checkpoint (found before writing it, or ENOSPC / EDQUOT while writing);
    nothing of the new file is left behind."""


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


def write_text(path: os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return atomic_write(path, write)


def write_json(path: os.PathLike, data: Dict[str, Any]) -> Path:
    """Write ``data`` atomically as strict, indented JSON: NaN and inf become null."""
    return write_text(path, json.dumps(_strict(data), indent=2, allow_nan=False) + "\n")


def _strict(x):
    if isinstance(x, (dict, list, tuple)):
        return {k: _strict(v) for k, v in x.items()} if isinstance(x, dict) else [_strict(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return int(x) if isinstance(x, np.integer) else x
