"""Training-curve figures: panel set, NaN handling, the mean line and seed band, and the atomic PNG write."""
import warnings

import matplotlib.image
import numpy as np
import pytest

from purejaxql.plots import save_training_plots, training_figure

SEEDS, UPDATES = 3, 50
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PANELS = ["training return", "greedy return", "win rate", "loss", "mean Q", "epsilon"]


def make_metrics(seeds=SEEDS, updates=UPDATES, win_rate=True):
    """Synthetic metrics with an upward return trend and NaN prefixes (staggered per seed) on test keys."""
    rng = np.random.default_rng(0)
    t = np.arange(updates, dtype=np.float64)
    steps = np.tile((t + 1) * 128, (seeds, 1)).astype(np.int64)
    ret = 0.5 * t + rng.normal(0.0, 1.0, (seeds, updates))
    test_ret = 0.6 * t + rng.normal(0.0, 1.0, (seeds, updates))
    for s in range(seeds):
        test_ret[s, : 5 + 2 * s] = np.nan  # columns 0-4 all-NaN, 5-8 partly NaN
    m = {
        "env_step": steps,
        "update_steps": np.tile(t + 1, (seeds, 1)),
        "returned_episode_returns": ret,
        "returned_episode_returns_agent_0": ret,
        "test_returned_episode_returns": test_ret,
        "test_returned_episode_returns_std": np.abs(test_ret),
        "loss": np.exp(-t / 10.0) + rng.uniform(0.0, 0.1, (seeds, updates)),
        "qvals": 0.1 * t + rng.normal(0.0, 0.1, (seeds, updates)),
        "epsilon": np.tile(np.maximum(1.0 - t / 25.0, 0.05), (seeds, 1)),
    }
    if win_rate:
        won = np.clip(t / updates + rng.normal(0.0, 0.05, (seeds, updates)), 0.0, 1.0)
        test_won = won.copy()
        test_won[:, :5] = np.nan
        m["returned_won_episode"] = won
        m["test_returned_won_episode"] = test_won
    return m


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def panel(fig, title):
    (ax,) = [ax for ax in fig.axes if ax.get_title() == title]
    return ax


def test_panels_smax_like():
    fig = training_figure(make_metrics(win_rate=True), title="smax run")
    assert titles(fig) == ALL_PANELS
    assert len(fig.axes) == len(ALL_PANELS)  # exactly one Axes per panel
    assert fig.get_suptitle() == "smax run"
    assert all(ax.get_xlabel() == "env steps" for ax in fig.axes)
    win = panel(fig, "win rate")
    assert [line.get_label() for line in win.get_lines()] == ["training", "greedy"]
    assert win.get_legend() is not None


def test_panels_mpe_like():
    fig = training_figure(make_metrics(win_rate=False))
    assert titles(fig) == ["training return", "greedy return", "loss", "mean Q", "epsilon"]
    assert fig.get_suptitle() == ""


def test_mean_line_and_band_are_nan_aware():
    m = make_metrics()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice" or other warnings may escape
        fig = training_figure(m)
    ax = panel(fig, "greedy return")
    (line,) = ax.get_lines()
    vals = m["test_returned_episode_returns"]
    keep = ~np.all(np.isnan(vals), axis=0)
    assert keep.sum() == UPDATES - 5
    np.testing.assert_allclose(line.get_xdata(), m["env_step"][0, keep])
    np.testing.assert_allclose(line.get_ydata(), np.nanmean(vals[:, keep], axis=0))
    assert not np.isnan(np.asarray(line.get_ydata())).any()

    # the band is mean +/- std over seeds
    (band,) = ax.collections
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    mean, std = np.nanmean(vals[:, keep], axis=0), np.nanstd(vals[:, keep], axis=0)
    np.testing.assert_allclose(ys.max(), (mean + std).max())
    np.testing.assert_allclose(ys.min(), (mean - std).min())

    train = panel(fig, "training return").get_lines()[0]
    np.testing.assert_allclose(train.get_ydata(), m["returned_episode_returns"].mean(axis=0))
    assert len(panel(fig, "loss").collections) == 0  # no band on loss / Q / epsilon


def test_save_png(tmp_path):
    m = make_metrics()
    out = save_training_plots(m, tmp_path / "plots" / "training.png", title="run")
    assert out == tmp_path / "plots" / "training.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    assert not list(tmp_path.rglob("*.tmp"))
    w, h = (training_figure(m, title="run").get_size_inches() * 100).round().astype(int)
    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (h, w)


def test_one_seed_has_no_band(tmp_path):
    m = {k: v[:1] for k, v in make_metrics().items()}
    fig = training_figure(m)
    assert titles(fig) == ALL_PANELS
    assert all(len(ax.collections) == 0 for ax in fig.axes)
    ax = panel(fig, "training return")
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), m["returned_episode_returns"][0])
    assert save_training_plots(m, tmp_path / "one.png").read_bytes().startswith(PNG_SIGNATURE)


def test_missing_optional_keys_are_skipped():
    m = make_metrics()
    subset = {k: m[k] for k in ("env_step", "returned_episode_returns", "epsilon")}
    assert titles(training_figure(subset)) == ["training return", "epsilon"]
    only_test_win = dict(subset, test_returned_won_episode=m["test_returned_won_episode"])
    fig = training_figure(only_test_win)
    assert titles(fig) == ["training return", "win rate", "epsilon"]
    assert [line.get_label() for line in panel(fig, "win rate").get_lines()] == ["greedy"]


def test_missing_env_step_raises():
    m = make_metrics()
    del m["env_step"]
    with pytest.raises(ValueError, match="env_step"):
        training_figure(m)


def test_mismatched_length_raises():
    m = make_metrics()
    m["loss"] = m["loss"][:, :10]
    with pytest.raises(ValueError, match="loss"):
        training_figure(m)
