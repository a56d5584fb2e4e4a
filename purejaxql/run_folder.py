"""The run folder: what a CLI run leaves behind, and how it is written while the run trains.

    <run folder>/                 hydra's output dir (outputs/<date>/<time>/ unless hydra.run.dir=...)
      config.yaml                 resolved config: run keys + the ``alg`` block; RESUME compares against it
      metrics.csv                 one row per update and seed: seed_index, update, then every metric
      summary.json                final greedy return per seed, win rate, timings, steps/s, versions, status
      training_plots.png          training / greedy return, win rate, loss, mean Q, ε (purejaxql.plots)
      checkpoints/
        state_u<U>.safetensors    full training state after U updates (the last CHECKPOINT_KEEP kept)
        seed<SEED>_<i>.safetensors  each seed's final parameters + .yaml

Both kinds of checkpoint, their format and the atomic write every file here goes through are
purejaxql.checkpoint's: a run killed at any moment leaves either the previous version of a file or the new
one, never half of one; files follow the umask. A disk without room for a state checkpoint stops the run
(:class:`TrainingStopped`) with the previous checkpoint intact.
"""
from __future__ import annotations

import csv
import io
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from purejaxql.checkpoint import NotEnoughSpace, latest_state, load_state, save_state, state_header, write_text
from purejaxql.config import ConfigError

__all__ = ["MetricsCSV", "read_metrics_csv", "write_config", "read_config", "config_differences", "versions",
           "first_non_finite", "non_finite_while_learning", "Recorder", "TrainingStopped", "RESULT_NEUTRAL_KEYS",
           "resume_point"]

PLOT_EVERY_S = 60.0  # training_plots.png is refreshed with a state checkpoint at most this often

# Run keys that do not change what a run computes: a resumed run may change them.
RESULT_NEUTRAL_KEYS = {"PROGRESS", "WATCHDOG_TIMEOUT", "WANDB_MODE", "ENTITY", "PROJECT", "WANDB_LOG_ALL_SEEDS",
                       "SAVE_PATH", "CHECKPOINT_INTERVAL", "CHECKPOINT_KEEP", "NAN_CHECK", "RESUME", "DEBUG"}


# --------------------------------------------------------------------------------------------- metrics


def _cell(x) -> str:
    if isinstance(x, (np.integer, int, np.bool_, bool)):
        return str(int(x))
    return repr(float(x))  # shortest text that reads back to the same value


class MetricsCSV:
    """metrics.csv, appended chunk by chunk (one row per update and seed, updates in order)."""

    def __init__(self, path: Path, index_columns: Optional[Dict[str, Sequence[int]]] = None):
        """``index_columns``: name -> value per run, written first (default ``seed_index``: 0, 1, ...)."""
        self.path = Path(path)
        self.names: List[str] = []
        self.index = index_columns

    def rewrite(self, history: Dict[str, np.ndarray]):
        """Start the file afresh with the rows of ``history`` ({name: (S, U)}) (a new or resumed run);
        its metric names, sorted, are the columns from then on."""
        self.names = sorted(history)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([*(self.index or {"seed_index": 0}), "update", *self.names])
        write_text(self.path, buf.getvalue() + self._rows(history, 0))

    def append(self, chunk: Dict[str, np.ndarray], first_update: int):
        if set(chunk) != set(self.names):
            raise ValueError(f"metrics {sorted(chunk)} do not match the columns of {self.path}: {self.names}")
        with open(self.path, "a") as f:
            f.write(self._rows(chunk, first_update))
            f.flush()

    def _rows(self, metrics: Dict[str, np.ndarray], first_update: int) -> str:
        names = self.names
        if not names:
            return ""
        cols = [np.asarray(metrics[k]) for k in names]
        S, U = cols[0].shape
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        index = list(zip(*self.index.values())) if self.index else [(s,) for s in range(S)]
        for u in range(U):
            for s in range(S):
                w.writerow([*index[s], first_update + u, *(_cell(c[s, u]) for c in cols)])
        return buf.getvalue()


def read_metrics_csv(path: Path) -> Dict[str, np.ndarray]:
    """metrics.csv -> {name: (R, U) float64 array}, R runs (seeds; HYP_TUNE: configurations × seeds), the
    index columns included (for notebooks and tests)."""
    with open(path) as f:
        rows = list(csv.reader(f))
    head, body = rows[0], np.array(rows[1:], dtype=np.float64)
    col = head.index("update")
    U = int(body[:, col].max()) + 1
    return {k: body[:, j].reshape(U, -1).T for j, k in enumerate(head) if k != "update"}


# ---------------------------------------------------------------------------------------------- config


def write_config(folder: Path, run_keys: Dict[str, Any], alg_keys: Dict[str, Any]) -> Path:
    text = yaml.safe_dump({**run_keys, "alg": alg_keys}, sort_keys=False)
    return write_text(Path(folder) / "config.yaml", text)


def read_config(folder: Path) -> Dict[str, Any]:
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"RESUME={folder}: no run there ({path} does not exist)")
    try:
        cfg = yaml.safe_load(path.read_text())
        assert isinstance(cfg, dict) and isinstance(cfg.get("alg"), dict)
    except Exception:
        raise ConfigError(f"RESUME={folder}: {path} is not a run's config") from None
    return cfg


def resume_point(folder: Path) -> Tuple[Dict[str, Any], Path, Dict[str, Any]]:
    """A run folder to resume -> (its config, its newest state checkpoint, that checkpoint's header); a
    folder that cannot be resumed raises :class:`ConfigError` saying why."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"RESUME={folder}: no such folder")
    saved = read_config(folder)
    path = latest_state(folder)
    if path is None:
        raise ConfigError(f"RESUME={folder}: the folder holds no training-state checkpoint "
                          "(checkpoints/state_u*.safetensors, saved every CHECKPOINT_INTERVAL)")
    return saved, path, state_header(path)


def config_differences(saved: Dict[str, Any], now: Dict[str, Any], keys: Sequence[str]) -> List[str]:
    """Dotted ``keys`` (``alg.LR``, ``NUM_SEEDS``) whose values differ between two nested configs and that
    change results, as ``"alg.LR: 0.005 in the run, 0.1 now"``."""
    out = []
    for key in keys:
        if key.split(".")[-1] in RESULT_NEUTRAL_KEYS:
            continue
        a, b = _get(saved, key), _get(now, key)
        if not _same(a, b):
            out.append(f"{key}: {a!r} in the run, {b!r} now")
    return out


_MISSING = "<not set>"


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _same(a, b) -> bool:
    try:
        return bool(float(a) == float(b))
    except (TypeError, ValueError):
        return a == b


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("purejaxql", "jax", "jaxlib", "flax", "optax", "flashbax", "jaxmarl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ------------------------------------------------------------------------------------- faults, recording


class TrainingStopped(Exception):
    """The run stopped itself (non-finite values); the message says where and what was kept."""


def non_finite_while_learning(metrics: Dict[str, np.ndarray], name: str) -> np.ndarray:
    """(R, U): ``metrics[name]`` is NaN / inf at an update with a gradient step (before the first one,
    loss and qvals are NaN by design)."""
    return (np.asarray(metrics["grad_steps"]) > 0) & ~np.isfinite(np.asarray(metrics[name], np.float64))


def first_non_finite(metrics: Dict[str, np.ndarray], params_finite: np.ndarray, first_update: int
                     ) -> Optional[str]:
    """The first sign of divergence in a chunk of updates, or None. ``loss`` and ``qvals`` count from the
    first update with a gradient step (before it they are NaN by design); ``params_finite`` (S,) says
    whether each seed's parameters are finite after the chunk."""
    for name in ("loss", "qvals"):
        bad = non_finite_while_learning(metrics, name)
        if bad.any():
            s, u = np.argwhere(bad.T)[0][::-1]
            return f"non-finite {name} ({metrics[name][s, u]}) at update {first_update + u} (seed_index {s})"
    if not np.all(params_finite):
        s = int(np.argmin(params_finite))
        last = first_update + metrics["grad_steps"].shape[1] - 1
        return f"non-finite parameters after update {last} (seed_index {s})"
    return None


class Recorder:
    """Writes a run's folder while it trains: metrics.csv after each chunk, the NaN check, a state
    checkpoint every ``checkpoint_every`` updates (with fresh plots at most every PLOT_EVERY_S)."""

    def __init__(self, folder: Path, num_updates: int, checkpoint_every: int, keep: int, nan_check: bool,
                 header: Dict[str, Any], title: str, index_columns: Optional[Dict[str, Sequence[int]]] = None):
        self.folder, self.num_updates, self.every, self.keep = Path(folder), num_updates, checkpoint_every, keep
        self.nan_check, self.header, self.title = nan_check, header, title
        self.csv = MetricsCSV(self.folder / "metrics.csv", index_columns)
        self.chunks: List[Dict[str, np.ndarray]] = []
        self.last_checkpoint: Optional[Path] = None
        self.last_saved_update = 0
        self.started = False
        self.last_plot = time.time()

    def history(self) -> Dict[str, np.ndarray]:
        if not self.chunks:
            return {}
        return {k: np.concatenate([c[k] for c in self.chunks], axis=1) for k in self.chunks[0]}

    def resume(self, path: Path, template) -> Tuple[Any, int]:
        """Load the state checkpoint ``path`` (shaped like ``template``); rewrite metrics.csv from it."""
        runner, history, header = load_state(path, template)
        done = int(header["updates_done"])
        self.chunks = [history] if history else []
        self.csv.rewrite(history)
        self.started, self.last_checkpoint, self.last_saved_update = bool(history), Path(path), done
        return runner, done

    def chunk(self, get_state: Callable[[], Any], metrics: Dict[str, np.ndarray], params_finite: np.ndarray,
              updates_done: int):
        """After a chunk of updates: append its metrics, stop on a non-finite one (NAN_CHECK), save a state
        checkpoint when one is due (``get_state()``: the driver's state with its runs axis, built only then)."""
        first = updates_done - metrics["env_step"].shape[1]
        self.chunks.append(metrics)
        if self.started:
            self.csv.append(metrics, first)
        else:
            self.csv.rewrite(metrics)
            self.started = True
        problem = first_non_finite(metrics, params_finite, first) if self.nan_check else None
        if problem:
            kept = f"; last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else \
                "; no state checkpoint was saved before it"
            raise TrainingStopped(f"{problem}{kept}. NAN_CHECK=False runs on regardless.")
        if self.every and updates_done - self.last_saved_update >= self.every and updates_done < self.num_updates:
            try:
                self.last_checkpoint = save_state(self.folder, get_state(), self.history(), updates_done,
                                                  self.header, self.keep)
            except NotEnoughSpace as e:
                kept = f"the newest state checkpoint, {self.last_checkpoint}, is kept: free some space and " \
                    f"continue with RESUME={self.folder}" if self.last_checkpoint else \
                    "no state checkpoint was saved before it"
                raise TrainingStopped(f"{e}. Stopped after {updates_done} updates; {kept}") from None
            self.last_saved_update = updates_done
            if time.time() - self.last_plot > PLOT_EVERY_S:
                self.plots()

    def plots(self):
        from purejaxql.plots import save_training_plots
        self.last_plot = time.time()
        if self.chunks:
            save_training_plots(self.history(), self.folder / "training_plots.png", self.title)
