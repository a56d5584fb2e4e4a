"""HYP_TUNE: hyperparameter search run as one vmapped program.

An alg config declares its search space in a ``TUNE:`` block, key -> list of values or a range::

    TUNE:
      LR: {min: 0.0001, max: 0.01, num: 8, log: True}   # 8 log-spaced values, both ends included
      GAMMA: [0.9, 0.95, 0.99]

``python -m purejaxql.qmix_ps +alg=qmix_mpe HYP_TUNE=True TUNE_NUM_SEEDS=4`` runs the grid (the Cartesian
product) × TUNE_NUM_SEEDS seeds. Hyperparameters the program only uses in arithmetic (:data:`TRACEABLE`:
learning rate, gradient clip, γ, λ, τ, reward scale, ε schedule) are passed into the compiled program as
arrays and vmapped together with the seeds: the whole grid is one compile and one run. Every other key
(network sizes, NUM_ENVS, buffer sizes, ...) changes the program's shapes; those are swept with hydra's
multirun, one compile per structure (the CLI turns them into ``-m alg.KEY=v1,v2`` itself).

Every configuration uses the same seeds (seed i: ``split(PRNGKey(SEED), TUNE_NUM_SEEDS)[i]``), so
configurations are compared on common random numbers. Results, in the run folder: ``tune.csv`` (one row
per configuration, best first: hyperparameters, mean ± std over seeds of the final greedy return, how many
seeds diverged (non-finite loss; those configurations rank last), each seed's return, win rate where there
is one), the same table printed, and ``tune_plot.png`` (final greedy
return against each hyperparameter).
"""
from __future__ import annotations

import csv
import io
import itertools
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import yaml

from purejaxql.config import ConfigError, resolve_config
from purejaxql.checkpoint import write_text
from purejaxql.run_folder import non_finite_while_learning

__all__ = ["TRACEABLE", "expand", "split_structural", "grid_arrays", "rank", "rank_order", "table_text",
           "write_table", "save_tune_plot", "read_table", "tune_grid", "report_tune", "combine_tune"]

# Keys the training programs use only in traced arithmetic: they can vary along a vmap axis.
TRACEABLE = ("LR", "MAX_GRAD_NORM", "GAMMA", "REW_SCALE", "EPSILON_START", "EPSILON_FINISH",
             "EPSILON_ANNEAL_TIME", "TAU", "LAMBDA")


def _values(key: str, spec: Any) -> List[Any]:
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError(f"TUNE.{key} is an empty list")
        return list(spec)
    if isinstance(spec, Mapping) and {"min", "max", "num"} <= set(spec):
        try:
            lo, hi, n = float(spec["min"]), float(spec["max"]), int(spec["num"])
        except (TypeError, ValueError):
            raise ConfigError(f"TUNE.{key}: min, max must be numbers and num an integer, got {dict(spec)}") from None
        if n < 1:
            raise ConfigError(f"TUNE.{key}: num must be >= 1, got {n}")
        if spec.get("log", False):
            if lo <= 0 or hi <= 0:
                raise ConfigError(f"TUNE.{key}: a log range needs min, max > 0, got {lo:g}, {hi:g}")
            vals = np.geomspace(lo, hi, n)
        else:
            vals = np.linspace(lo, hi, n)
        return [float(f"{v:.6g}") for v in vals]
    raise ConfigError(f"TUNE.{key} must be a list of values or {{min, max, num[, log]}}, got {spec!r}")


def expand(tune: Mapping[str, Any]) -> Tuple[List[str], List[Dict[str, Any]]]:
    """TUNE block -> (keys, grid points as {key: value}), the Cartesian product in key order."""
    if not isinstance(tune, Mapping) or not tune:
        raise ConfigError("HYP_TUNE=True needs a TUNE block in the alg config (key: [values] or "
                          "{min, max, num, log}), e.g. +alg.TUNE.LR=[0.001,0.005]")
    keys = list(tune)
    values = [_values(k, tune[k]) for k in keys]
    return keys, [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def split_structural(tune: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, List[Any]]]:
    """-> (the traceable part of the TUNE block, {structural key: values})."""
    traced = {k: v for k, v in tune.items() if k in TRACEABLE}
    structural = {k: _values(k, v) for k, v in tune.items() if k not in TRACEABLE}
    return traced, structural


def grid_arrays(points: Sequence[Dict[str, Any]], num_seeds: int) -> Dict[str, np.ndarray]:
    """Grid points -> {key: float32 (G·S,)} in run order (point-major: runs g·S .. g·S+S-1 are point g)."""
    keys = list(points[0]) if points else []
    return {k: np.repeat(np.asarray([float(p[k]) for p in points], np.float32), num_seeds) for k in keys}


def rank(points: Sequence[Dict[str, Any]], final_return: np.ndarray, num_seeds: int,
         win_rate: np.ndarray = None, diverged: np.ndarray = None) -> List[Dict[str, Any]]:
    """One row per grid point, best mean final greedy return first; points where a seed diverged
    (non-finite loss, ``diverged`` (G·S,)) last. ``final_return``: (G·S,) in run order."""
    ret = np.asarray(final_return, np.float64).reshape(len(points), num_seeds)
    bad = np.zeros((len(points), num_seeds), bool) if diverged is None else \
        np.asarray(diverged, bool).reshape(len(points), num_seeds)
    won = None if win_rate is None else np.asarray(win_rate, np.float64).reshape(len(points), num_seeds)
    rows = []
    for g, p in enumerate(points):
        row = {"config": g, **p, "return_mean": float(np.nanmean(ret[g])), "return_std": float(np.nanstd(ret[g])),
               "diverged_seeds": int(bad[g].sum())}
        if won is not None:
            row["win_rate_mean"] = float(np.nanmean(won[g]))
        row.update({f"return_seed{s}": float(ret[g, s]) for s in range(num_seeds)})
        rows.append(row)
    return sorted(rows, key=rank_order)


def rank_order(r: Dict[str, Any]):
    """Sort key of a table row: finished configurations by mean return (best first), then the rest."""
    finite = math.isfinite(r["return_mean"])
    return (r.get("diverged_seeds", 0) > 0, not finite, -r["return_mean"] if finite else 0.0)


def table_text(rows: Sequence[Dict[str, Any]], keys: Sequence[str], limit: int = 20) -> str:
    head = ["rank", "config", *keys, "return mean ± std"] + (["win rate"] if rows and "win_rate_mean" in rows[0]
                                                            else []) + ["diverged"]
    lines = [head]
    for i, r in enumerate(rows[:limit]):
        line = [str(i + 1), str(r["config"]), *(f"{r[k]:g}" if isinstance(r[k], float) else str(r[k])
                                                 for k in keys), f"{r['return_mean']:.3f} ± {r['return_std']:.3f}"]
        if "win_rate_mean" in r:
            line.append(f"{r['win_rate_mean']:.3f}")
        line.append(str(r.get("diverged_seeds", 0)))
        lines.append(line)
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(x, widths)) for x in lines]
    if len(rows) > limit:
        out.append(f"  ... {len(rows) - limit} more in tune.csv")
    return "\n".join(out)


def write_table(path: Path, rows: Sequence[Dict[str, Any]]) -> Path:
    buf = io.StringIO()
    names = list(rows[0])
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", *names])
    for i, r in enumerate(rows):
        w.writerow([i + 1, *(repr(r[k]) if isinstance(r[k], float) else r[k] for k in names)])
    return write_text(Path(path), buf.getvalue())


def read_table(path: Path) -> List[Dict[str, Any]]:
    def value(x):
        try:
            return int(x)
        except ValueError:
            try:
                return float(x)
            except ValueError:
                return x
    with open(path) as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def save_tune_plot(path: Path, rows: Sequence[Dict[str, Any]], keys: Sequence[str], title: str = "") -> Path:
    """Final greedy return (mean ± std over seeds) against each hyperparameter: every configuration as a
    point, the best value per setting of that key as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib (0.6 s) only when plotting
    from matplotlib.figure import Figure

    n = max(1, len(keys))
    fig = Figure(figsize=(4.0 * n, 3.4), constrained_layout=True)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, n, i + 1)
        raw = [r[key] for r in rows]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw)
        labels = sorted({str(x) for x in raw})
        xs = np.array([float(x) for x in raw]) if numeric else np.array([labels.index(str(x)) for x in raw], float)
        ys = np.array([r["return_mean"] for r in rows])
        es = np.array([r["return_std"] for r in rows])
        ax.errorbar(xs, ys, yerr=es, fmt="o", alpha=0.6, capsize=2)
        best = {x: np.nanmax(ys[xs == x]) if np.any(np.isfinite(ys[xs == x])) else np.nan for x in np.unique(xs)}
        ax.plot(list(best), list(best.values()), "-", color="C1", label="best at this value")
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        elif np.all(xs > 0) and xs.max() / xs.min() >= 20:
            ax.set_xscale("log")
        ax.set_title(key)
        ax.set_xlabel(key)
        ax.set_ylabel("final greedy return")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------- running a grid (CLI)


def tune_grid(train_cfg: Dict[str, Any], spec, env) -> Tuple[List[str], List[Dict[str, Any]]]:
    """HYP_TUNE: the TUNE block's traceable grid -> (keys, points), each point checked like a config."""
    traced, structural = split_structural(train_cfg.get("TUNE") or {})
    if structural:
        raise ConfigError(f"TUNE keys {sorted(structural)} change the program's shapes: sweep them with hydra "
                          "multirun (python -m purejaxql.<module> ... HYP_TUNE=True does it, without -m)")
    if not train_cfg["TEST_DURING_TRAINING"]:
        raise ConfigError("HYP_TUNE ranks configurations by their final greedy return: TEST_DURING_TRAINING "
                          "must be True")
    # no traceable key left: this structure (one job of the CLI's multirun) is one configuration
    keys, points = expand(traced) if traced else ([], [{}])
    for p in points:
        try:
            resolve_config({**train_cfg, **p}, spec, env)
        except ConfigError as e:
            raise ConfigError(f"TUNE grid point {p}: {e}") from None
    return keys, points


def report_tune(run_dir: Path, tune, history: Dict[str, np.ndarray], num_seeds: int, title: str) -> Dict[str, Any]:
    """tune.csv, tune_plot.png and the printed ranking; -> the best configuration's row."""
    keys, points = tune
    won = history.get("test_returned_won_episode")
    diverged = np.any(non_finite_while_learning(history, "loss") | non_finite_while_learning(history, "qvals"),
                      axis=1)
    rows = rank(points, history["test_returned_episode_returns"][:, -1], num_seeds,
                None if won is None else won[:, -1], diverged)
    write_table(run_dir / "tune.csv", rows)
    if keys:
        save_tune_plot(run_dir / "tune_plot.png", rows, keys, title)
    print(f"{title}: HYP_TUNE, {len(points)} configurations x {num_seeds} seeds, ranked by final greedy return",
          flush=True)
    print(table_text(rows, keys), flush=True)
    return rows[0]


def combine_tune(sweep: Path, structural: List[str], alg: str):
    """After a HYP_TUNE multirun: every job's tune.csv ranked together in ``sweep``/tune.csv (+ plot)."""
    rows, keys = [], None
    for job in sorted((p for p in sweep.iterdir() if p.is_dir() and (p / "tune.csv").is_file()),
                      key=lambda p: int(p.name) if p.name.isdigit() else 0):
        alg_cfg = yaml.safe_load((job / "config.yaml").read_text())["alg"]
        keys = keys or structural + list(alg_cfg.get("TUNE") or {})  # the job's TUNE: the traced keys
        for r in read_table(job / "tune.csv"):
            r.pop("rank")
            rows.append({"config": f"{job.name}/{r['config']}", **{k: alg_cfg[k] for k in structural},
                         **{k: v for k, v in r.items() if k != "config"}})
    if not rows:
        return
    rows.sort(key=rank_order)
    write_table(sweep / "tune.csv", rows)
    save_tune_plot(sweep / "tune_plot.png", rows, keys, f"{alg}: HYP_TUNE")
    print(f"{alg}: HYP_TUNE over {len(rows)} configurations (job/config), ranked by final greedy return:")
    print(table_text(rows, keys), flush=True)
    print(f"  {sweep}/tune.csv, {sweep}/tune_plot.png", flush=True)
