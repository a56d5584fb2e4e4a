"""purejaxql.tuning without training: grids, ranges, ranking, tables, plots."""
import numpy as np
import pytest

from purejaxql import tuning
from purejaxql.config import ConfigError


def test_expand_is_the_cartesian_product_of_lists_and_ranges():
    keys, points = tuning.expand({"LR": {"min": 1e-4, "max": 1e-2, "num": 3, "log": True}, "GAMMA": [0.9, 0.99]})
    assert keys == ["LR", "GAMMA"]
    assert points == [{"LR": 1e-4, "GAMMA": 0.9}, {"LR": 1e-4, "GAMMA": 0.99}, {"LR": 1e-3, "GAMMA": 0.9},
                      {"LR": 1e-3, "GAMMA": 0.99}, {"LR": 1e-2, "GAMMA": 0.9}, {"LR": 1e-2, "GAMMA": 0.99}]
    assert tuning.expand({"TAU": {"min": 0.5, "max": 1.0, "num": 3}})[1] == [{"TAU": 0.5}, {"TAU": 0.75}, {"TAU": 1.0}]


@pytest.mark.parametrize("tune,message", [
    ({}, "needs a TUNE block"),
    ({"LR": []}, "TUNE.LR is an empty list"),
    ({"LR": {"min": 0, "max": 1, "num": 3, "log": True}}, "a log range needs min, max > 0"),
    ({"LR": {"min": 1, "max": 2, "num": 0}}, "num must be >= 1"),
    ({"LR": 0.1}, "must be a list of values or {min, max, num[, log]}"),
])
def test_bad_search_spaces_are_named(tune, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")):
        tuning.expand(tune)


def test_structural_keys_are_split_off():
    traced, structural = tuning.split_structural({"LR": [1, 2], "AGENT_HIDDEN_DIM": [8, 16], "LAMBDA": [0.5]})
    assert traced == {"LR": [1, 2], "LAMBDA": [0.5]} and structural == {"AGENT_HIDDEN_DIM": [8, 16]}


def test_grid_arrays_are_point_major():
    arrays = tuning.grid_arrays([{"LR": 0.1}, {"LR": 0.2}], 3)
    np.testing.assert_allclose(arrays["LR"], [0.1, 0.1, 0.1, 0.2, 0.2, 0.2])
    assert arrays["LR"].dtype == np.float32


def test_rank_orders_by_mean_return_and_puts_diverged_configurations_last(tmp_path):
    points = [{"LR": 0.1}, {"LR": 0.2}, {"LR": 0.3}]
    final = np.array([-10.0, -12.0, -5.0, -7.0, -1.0, -2.0])  # 3 configurations x 2 seeds
    rows = tuning.rank(points, final, 2, diverged=np.array([0, 0, 0, 0, 1, 0]))
    assert [r["config"] for r in rows] == [1, 0, 2]  # config 2 has the best return but a seed diverged
    assert rows[0]["return_mean"] == -6.0 and rows[0]["return_std"] == 1.0
    assert rows[0]["return_seed0"] == -5.0 and rows[2]["diverged_seeds"] == 1
    text = tuning.table_text(rows, ["LR"])
    assert text.splitlines()[1].split()[:4] == ["1", "1", "0.2", "-6.000"]
    path = tuning.write_table(tmp_path / "tune.csv", rows)
    back = tuning.read_table(path)
    assert [r["rank"] for r in back] == [1, 2, 3] and back[0]["LR"] == 0.2 and back[0]["return_mean"] == -6.0


def test_tune_plot_handles_numbers_and_categories(tmp_path):
    rows = [{"config": i, "LR": lr, "AGENT_TYPE": t, "return_mean": -float(i), "return_std": 0.5}
            for i, (lr, t) in enumerate([(1e-4, "rnn"), (1e-2, "rnn"), (1e-4, "ff"), (1e-2, "ff")])]
    path = tuning.save_tune_plot(tmp_path / "tune_plot.png", rows, ["LR", "AGENT_TYPE"], "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp"))
