"""Training-curve figures from the metrics a training run returns.

The figures are built on a bare :class:`matplotlib.figure.Figure` with an Agg canvas, so nothing here
touches pyplot's global state: it works the same in a notebook, a script and headless CI.

``metrics`` maps a metric name to an array of shape ``(num_seeds, num_updates)`` (a 1-D array is taken
as a single seed). Values are NaN until first measured, e.g. the greedy evaluation only runs every few
updates and its early entries are NaN. The panels, in order (each skipped when its keys are missing):

* ``"training return"``  - ``returned_episode_returns``
* ``"greedy return"``    - ``test_returned_episode_returns``
* ``"win rate"``         - ``returned_won_episode`` and ``test_returned_won_episode`` (SMAX-like envs)
* ``"loss"``             - ``loss``
* ``"mean Q"``           - ``qvals``
* ``"epsilon"``          - ``epsilon``

Every panel plots the mean over seeds against ``env_step`` (required; seed 0's row is the x axis). The
return and win-rate panels add a shaded band of mean +/- one standard deviation over seeds (population
std, ``ddof=0``) when there is more than one seed. Means and stds ignore NaN entries; update columns
that are NaN for every seed are left out. Any other keys are ignored.
"""
from __future__ import annotations

import math
import os
import pathlib
import warnings
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANEL_WIDTH = 4.0   # inches per panel column
PANEL_HEIGHT = 3.2  # inches per panel row
DPI = 100
NCOLS = 3

# (title, [(metric key, line label)], draw the seed band)
_PANELS: Sequence[Tuple[str, Sequence[Tuple[str, Optional[str]]], bool]] = (
    ("training return", (("returned_episode_returns", None),), True),
    ("greedy return", (("test_returned_episode_returns", None),), True),
    ("win rate", (("returned_won_episode", "training"), ("test_returned_won_episode", "greedy")), True),
    ("loss", (("loss", None),), False),
    ("mean Q", (("qvals", None),), False),
    ("epsilon", (("epsilon", None),), False),
)


def _as_2d(name: str, value: np.ndarray, num_updates: Optional[int] = None) -> np.ndarray:
    """``value`` as a float array of shape (num_seeds, num_updates)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"metric {name!r} must have shape (num_seeds, num_updates), got {arr.shape}")
    if num_updates is not None and arr.shape[1] != num_updates:
        raise ValueError(f"metric {name!r} has {arr.shape[1]} updates, env_step has {num_updates}")
    return arr


def seed_stats(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NaN-aware (valid column mask, mean, std) over the seed axis of a (num_seeds, num_updates) array.

    ``mean`` and ``std`` hold only the valid columns (those with at least one non-NaN seed).
    """
    valid = ~np.all(np.isnan(values), axis=0)
    kept = values[:, valid]
    with warnings.catch_warnings():  # "Mean of empty slice" / "Degrees of freedom <= 0"
        warnings.simplefilter("ignore", RuntimeWarning)
        return valid, np.nanmean(kept, axis=0), np.nanstd(kept, axis=0)


def _plot_metric(ax: Axes, x: np.ndarray, values: np.ndarray, label: Optional[str], band: bool) -> None:
    valid, mean, std = seed_stats(values)
    if not valid.any():
        return
    (line,) = ax.plot(x[valid], mean, label=label if label is not None else "mean")
    if band and values.shape[0] > 1:
        ax.fill_between(x[valid], mean - std, mean + std, color=line.get_color(), alpha=0.25, linewidth=0)


def training_figure(metrics: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """Build the training-curve figure for ``metrics`` (see the module docstring for keys and panels).

    The figure has exactly one Axes per drawn panel, laid out in rows of up to three, and is not
    registered with pyplot. Raises ValueError if ``env_step`` is missing or shapes disagree.
    """
    if "env_step" not in metrics:
        raise ValueError("metrics must contain 'env_step' (the x axis)")
    x = _as_2d("env_step", metrics["env_step"])[0]
    panels: List[Tuple[str, List[Tuple[np.ndarray, Optional[str]]], bool]] = []
    for panel_title, keys, band in _PANELS:
        series = [(_as_2d(k, metrics[k], x.shape[0]), label) for k, label in keys if k in metrics]
        if series:
            panels.append((panel_title, series, band))

    ncols = max(1, min(NCOLS, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(PANEL_WIDTH * ncols, PANEL_HEIGHT * nrows + (0.4 if title else 0.0)), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    for i, (panel_title, series, band) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for values, label in series:
            _plot_metric(ax, x, values, label, band)
        ax.set_title(panel_title)
        ax.set_xlabel("env steps")
        ax.grid(True, alpha=0.3)
        if panel_title == "win rate":
            ax.set_ylim(-0.02, 1.02)
            if ax.get_lines():
                ax.legend(loc="best")
    if title:
        fig.suptitle(title)
    return fig


def save_training_plots(metrics: Mapping[str, np.ndarray], path: Union[str, os.PathLike],
                        title: str = "") -> pathlib.Path:
    """Write :func:`training_figure` as a PNG at ``path`` and return the path.

    The image is written to ``path + ".tmp"`` and moved into place with :func:`os.replace`, so a reader
    never sees a partial file. Its size in pixels is the figure size in inches times ``DPI``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig = training_figure(metrics, title)
    try:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
        os.replace(tmp, path)
    finally:
        fig.clear()
        if tmp.exists():
            tmp.unlink()
    return path


__all__: List[str] = ["training_figure", "save_training_plots", "seed_stats"]
