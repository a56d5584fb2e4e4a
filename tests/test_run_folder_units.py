"""Unit tests of the run folder (purejaxql.run_folder), the checkpoints it holds (purejaxql.checkpoint) and
the CLI helpers around it (purejaxql.cli, .experiment, .driver, purejaxql.config.check_run_keys): state
checkpoints, metrics.csv, the NaN check, the Recorder, config comparison, key prechecks, the clean-up of
unused run folders, and the one safetensors scheme of both kinds of checkpoint, which still reads the files
written before it (section 12; the old files are tests/fixtures/legacy/, written by the old code itself: see
tests/legacy_checkpoints.py). Tiny numpy / jnp pytrees only: no training program is compiled, the whole file
runs in a few seconds."""
import errno
import functools
import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

import legacy_checkpoints as legacy
import purejaxql.checkpoint as ck
import purejaxql.run_folder as rf
from purejaxql.config import RUN_KEYS, ConfigError, check_run_keys
from purejaxql.cli import precheck_keys, remove_unused_run_dir
from purejaxql.experiment import checkpoint_every, run_summary

S = 2  # seeds (the leading axis of every runner leaf and metric)
# float32 bit patterns a lossy round trip would change: NaN with a payload, -0.0, a denormal, +inf
SPECIAL_BITS = np.array([0x7FC00001, 0x80000000, 0x00000001, 0x7F800000], np.uint32)


class Train(NamedTuple):
    params: dict
    opt_state: dict
    n_updates: jax.Array


class Runner(NamedTuple):
    train: Train
    buffer: dict
    rng: jax.Array   # raw PRNGKey data: uint32 (S, 2)
    key: jax.Array   # typed key: key<fry> (S,)
    first: jax.Array  # bool


def make_runner(seed: int = 0) -> Runner:
    rs = np.random.RandomState(seed)

    def f32(*shape):
        return jnp.asarray(rs.standard_normal((S,) + shape).astype(np.float32))

    special = np.tile(SPECIAL_BITS.view(np.float32), (S, 1))
    params = {"agent": {"dense": {"kernel": f32(3, 4), "bias": f32(4)}, "special": jnp.asarray(special)},
              "mixer": {"w": f32(2)}}
    opt = {"count": jnp.asarray(rs.randint(-5, 5, (S,)).astype(np.int32)),
           "mu": {"agent": f32(3, 4)}}
    train = Train(params=params, opt_state=opt, n_updates=jnp.full((S,), 7 + seed, jnp.int32))
    buffer = {"obs": f32(5, 3), "done": jnp.asarray(rs.rand(S, 5) > 0.5), "idx": jnp.arange(S, dtype=jnp.uint32)}
    rng = jax.vmap(jax.random.PRNGKey)(jnp.arange(S) + seed)
    key = jax.random.split(jax.random.key(seed), S)
    return Runner(train=train, buffer=buffer, rng=rng, key=key, first=jnp.asarray([True, False][:S]))


def template_of(runner):
    return jax.eval_shape(lambda r: r, runner)


def assert_same_tree(a, b):
    """Same structure and every leaf bit-for-bit equal, with the same shape and dtype (typed keys by data)."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    for (path, x), (_, y) in zip(la, lb):
        name = jax.tree_util.keystr(path)
        assert x.dtype == y.dtype, name
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name


def make_history(updates: int, first: int = 0, seeds: int = S, nan_from=None):
    """Synthetic metrics {name: (seeds, updates)} with sorted keys (as the jitted program returns them):
    ints for the counters, float32 values including NaN (loss / qvals before the first gradient step)."""
    u = np.arange(first, first + updates)
    s = np.arange(seeds)[:, None]
    grad = np.maximum(0, u - 1)[None].repeat(seeds, 0).astype(np.int32)  # learning from update 2 on
    loss = (0.1 + 0.01 * s + 1.0 / (u + 1)).astype(np.float32)
    loss = np.where(grad > 0, loss, np.nan).astype(np.float32)
    qvals = np.where(grad > 0, (0.3 * u - 0.7 * s) / 3.0, np.nan).astype(np.float32)
    m = {
        "env_step": ((u + 1) * 128)[None].repeat(seeds, 0).astype(np.int32),
        "epsilon": np.maximum(0.05, 1.0 - u / 7.0)[None].repeat(seeds, 0).astype(np.float32),
        "grad_steps": grad,
        "loss": loss,
        "qvals": qvals,
        "update_steps": (u + 1)[None].repeat(seeds, 0).astype(np.int32),
    }
    assert list(m) == sorted(m)
    return m


def cut(history, stop, start=0):
    return {k: v[:, start:stop] for k, v in history.items()}


# ----------------------------------------------------------------------------------------------- 1. state


def test_save_load_state_round_trip(tmp_path):
    runner = make_runner()
    history = make_history(3)
    info = {"module": "qmix_ps", "env": "MPE_simple_spread_v3", "config": {"SEED": 0, "alg": {"LR": 0.005}}}
    path = ck.save_state(tmp_path, runner, history, 7, info, keep=2)
    assert path == tmp_path / "checkpoints" / "state_u000000007.safetensors" and path.is_file()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # written under a temporary name, renamed

    loaded, hist, header = ck.load_state(path, template_of(runner))
    assert isinstance(loaded, Runner) and isinstance(loaded.train, Train)
    assert_same_tree(loaded, runner)
    assert jax.dtypes.issubdtype(loaded.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(np.asarray(loaded.train.params["agent"]["special"]).view(np.uint32),
                                  np.tile(SPECIAL_BITS, (S, 1)))  # NaN payload, -0.0, denormal, inf kept
    assert list(hist) == list(history)
    for k, v in history.items():
        assert hist[k].dtype == v.dtype and hist[k].tobytes() == v.tobytes(), k
    assert header["updates_done"] == 7 and header["format"] == ck.FORMAT and header["kind"] == "state"
    assert {k: header[k] for k in info} == info
    assert ck.state_header(path) == header
    # the loaded typed key behaves like the original one
    np.testing.assert_array_equal(jax.random.uniform(loaded.key[1]), jax.random.uniform(runner.key[1]))


def test_keep_last_checkpoints_and_ignore_temporary_files(tmp_path):
    runner, history = make_runner(), make_history(2)
    folder = tmp_path / "checkpoints"
    for u in (2, 4, 6):
        ck.save_state(tmp_path, runner, history, u, {}, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == ["state_u000000004.safetensors", "state_u000000006.safetensors"]
    (folder / "state_u000000008.safetensors.tmp").write_bytes(b"half a checkpoint")
    (folder / "state_ulatest.safetensors").write_bytes(b"not ours")
    assert [p.name for p in ck.state_files(tmp_path)] == ["state_u000000004.safetensors",
                                                         "state_u000000006.safetensors"]
    assert ck.latest_state(tmp_path) == folder / "state_u000000006.safetensors"
    assert ck.state_header(ck.latest_state(tmp_path))["updates_done"] == 6
    # checkpoints are ordered by update number, not by name
    ck.save_state(tmp_path, runner, history, 1_000_000_000, {}, keep=5)
    assert ck.latest_state(tmp_path).name == "state_u1000000000.safetensors"
    assert ck.latest_state(tmp_path / "nowhere") is None


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    ck.atomic_write(target, lambda tmp: Path(tmp).write_text("old"))
    assert target.read_text() == "old" and not list(target.parent.glob("*.tmp"))

    def broken(tmp):
        Path(tmp).write_text("new but ha")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        ck.atomic_write(target, broken)
    assert target.read_text() == "old" and not list(target.parent.glob("*.tmp"))  # no partial file left


# ----------------------------------------------------------------------------------------- 2. load errors


def test_load_state_shape_mismatch_names_leaf_and_both_shapes(tmp_path):
    runner = make_runner()
    path = ck.save_state(tmp_path, runner, {}, 3, {}, keep=2)
    tmpl = template_of(runner)
    kernel = tmpl.train.params["agent"]["dense"]["kernel"]
    params = {**tmpl.train.params, "agent": {**tmpl.train.params["agent"],
                                             "dense": {**tmpl.train.params["agent"]["dense"],
                                                       "kernel": jax.ShapeDtypeStruct((S, 3, 5), kernel.dtype)}}}
    bad = tmpl._replace(train=tmpl.train._replace(params=params))
    with pytest.raises(ConfigError) as e:
        ck.load_state(path, bad)
    msg = str(e.value)
    assert ": state/train/params/agent/dense/kernel is float32[2, 3, 4]" in msg
    assert "float32[2, 3, 4]" in msg and "float32[2, 3, 5]" in msg
    assert str(path) in msg


def test_load_state_dtype_mismatch_and_missing_leaf(tmp_path):
    runner = make_runner()
    path = ck.save_state(tmp_path, runner, {}, 3, {}, keep=2)
    tmpl = template_of(runner)
    as_float = tmpl._replace(first=jax.ShapeDtypeStruct((S,), jnp.float32))
    with pytest.raises(ConfigError, match=r": state/first is bool\[2\], the program expects float32\[2\]"):
        ck.load_state(path, as_float)
    extra = tmpl._replace(buffer={**tmpl.buffer, "reward": jax.ShapeDtypeStruct((S, 5), jnp.float32)})
    with pytest.raises(ConfigError, match=r": state/buffer/reward is missing"):
        ck.load_state(path, extra)
    # a typed key where the file holds other data: the key's data shape is checked
    wrong_key = tmpl._replace(key=jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 3)))
    with pytest.raises(ConfigError, match=r": state/key is uint32\[2, 2\], the program expects uint32\[3, 2\]"):
        ck.load_state(path, wrong_key)


def test_load_state_garbage_truncated_and_foreign_files(tmp_path):
    tmpl = template_of(make_runner())
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x17not a safetensors file at all" * 3)
    with pytest.raises(ConfigError, match="corrupt") as e:
        ck.load_state(garbage, tmpl)
    assert str(garbage) in str(e.value)

    good = ck.save_state(tmp_path / "run", make_runner(), make_history(2), 2, {}, keep=2)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(ConfigError, match="corrupt"):
        ck.load_state(truncated, tmpl)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(ConfigError, match="corrupt or not a purejaxql training state"):
        ck.load_state(foreign, tmpl)
    for key, header in [(ck.HEADER_KEY, {"format": "something-else/9", "kind": "state", "updates_done": 1}),
                        (ck.LEGACY_STATE_KEY, {"format": "something-else/9", "updates_done": 1})]:
        other_format = tmp_path / "other.safetensors"
        save_file({"x": np.zeros(3, np.float32)}, str(other_format), metadata={key: json.dumps(header)})
        with pytest.raises(ConfigError, match="corrupt or not a purejaxql training state .*format "
                                              "'something-else/9', which this version does not read"):
            ck.state_header(other_format)
    # a checkpoint of the other kind, either way round
    params = ck.save_checkpoint(tmp_path / "seed0_0.safetensors", {"agent": {"w": np.ones(2, np.float32)}},
                                {"module": "vdn_ps"})
    with pytest.raises(ConfigError, match=r"corrupt or not a purejaxql training state \(it holds a seed's final "
                                          "parameters"):
        ck.load_state(params, tmpl)
    with pytest.raises(ConfigError, match="not a purejaxql checkpoint of parameters \\(it holds a training state"):
        ck.load_checkpoint(good)


# -------------------------------------------------------------------------------------------- 3. metrics


def test_metrics_csv_rewrite_append_read_back(tmp_path):
    full = make_history(5)
    full["loss"][1, 3] = np.float32(-0.0)
    full["qvals"][0, 4] = np.float32(1e-40)  # a float32 denormal
    full["epsilon"][1, 2] = np.float32(0.1)   # not exactly representable: must still round-trip
    path = tmp_path / "metrics.csv"
    out = rf.MetricsCSV(path)
    out.rewrite(cut(full, 3))
    out.append(cut(full, 5, 3), first_update=3)

    lines = path.read_text().splitlines()
    assert lines[0] == "seed_index,update," + ",".join(full)
    assert [tuple(line.split(",")[:2]) for line in lines[1:]] == \
        [(str(s), str(u)) for u in range(5) for s in range(S)]  # update-major, then seed
    row = lines[1 + 2 * S + 1].split(",")  # update 2, seed 1
    names = ["seed_index", "update", *full]
    assert row[names.index("env_step")] == "384" and row[names.index("grad_steps")] == "1"  # ints as ints
    assert row[names.index("update_steps")] == "3"
    assert lines[1].split(",")[names.index("loss")] == "nan"

    back = rf.read_metrics_csv(path)
    assert list(back) == ["seed_index", *full]
    np.testing.assert_array_equal(back["seed_index"], np.tile(np.arange(S)[:, None], (1, back["seed_index"].shape[1])))
    for k, v in full.items():
        assert back[k].shape == v.shape, k
        b = back[k].astype(v.dtype)
        assert b.tobytes() == v.tobytes(), k  # bit-for-bit, NaN and -0.0 included
        np.testing.assert_array_equal(b, v, err_msg=k)  # NaN == NaN here
        np.testing.assert_array_equal(np.signbit(b), np.signbit(v), err_msg=k)
        np.testing.assert_array_equal(np.isnan(b), np.isnan(v), err_msg=k)


def test_metrics_csv_is_deterministic_and_append_equals_rewrite(tmp_path):
    full = make_history(5)
    a, b, c = (rf.MetricsCSV(tmp_path / f"{n}.csv") for n in "abc")
    a.rewrite(full)
    b.rewrite(full)
    c.rewrite(cut(full, 2))
    c.append(cut(full, 4, 2), first_update=2)
    c.append(cut(full, 5, 4), first_update=4)
    assert a.path.read_bytes() == b.path.read_bytes() == c.path.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------------------ 4. NaN check


def test_first_non_finite():
    m = make_history(4, first=0)  # loss / qvals NaN at updates 0 and 1 (grad_steps == 0) by design
    ok = np.ones(S, bool)
    assert rf.first_non_finite(m, ok, 10) is None
    m["qvals"][0, 0] = -np.inf  # not learning yet: ignored too
    assert rf.first_non_finite(m, ok, 10) is None

    nan_loss = {k: v.copy() for k, v in m.items()}
    nan_loss["loss"][0, 3] = np.nan
    nan_loss["loss"][1, 2] = np.nan  # earlier update, later seed: this one is first
    msg = rf.first_non_finite(nan_loss, ok, 10)
    assert msg is not None and msg.startswith("non-finite loss (nan) at update 12 (seed_index 1)"), msg

    inf_q = {k: v.copy() for k, v in m.items()}
    inf_q["qvals"][1, 3] = np.inf
    msg = rf.first_non_finite(inf_q, ok, 10)
    assert msg is not None and "non-finite qvals (inf) at update 13 (seed_index 1)" in msg, msg

    msg = rf.first_non_finite(m, np.array([True, False]), 10)
    assert msg == "non-finite parameters after update 13 (seed_index 1)", msg
    msg = rf.first_non_finite(make_history(4, seeds=3), np.array([True, True, False]), 0)
    assert msg == "non-finite parameters after update 3 (seed_index 2)", msg


# -------------------------------------------------------------------------------------------- 5. Recorder


def _recorder(folder, every, num_updates=10, keep=10, nan_check=True):
    return rf.Recorder(folder, num_updates, every, keep, nan_check, {"module": "qmix_ps", "env": "test"}, "t")


def _csv_bytes(tmp_path, history, name="expected.csv"):
    out = rf.MetricsCSV(tmp_path / "expected" / name)
    out.rewrite(history)
    return out.path.read_bytes()


@pytest.mark.parametrize("every,saved", [(0, []), (2, [2, 4, 6, 8]), (3, [4, 8]), (4, [4, 8]), (10, [])])
def test_recorder_checkpoints_every_n_updates_but_not_the_last(tmp_path, monkeypatch, every, saved):
    monkeypatch.setattr(rf, "PLOT_EVERY_S", 1e12)
    run = tmp_path / "run"
    full = make_history(10)
    rec = _recorder(run, every)
    for done in range(2, 11, 2):
        rec.chunk(lambda: make_runner(seed=done), cut(full, done, done - 2), np.ones(S, bool), done)
    assert [ck.state_header(p)["updates_done"] for p in ck.state_files(run)] == saved
    assert (run / "metrics.csv").read_bytes() == _csv_bytes(tmp_path, full)
    assert not (run / "training_plots.png").exists()
    hist = rec.history()
    for k in full:
        np.testing.assert_array_equal(hist[k], full[k])
    for p in ck.state_files(run):  # each checkpoint: the runner of that update and the metrics up to it
        runner, h, header = ck.load_state(p, template_of(make_runner()))
        u = header["updates_done"]
        assert header["module"] == "qmix_ps"
        assert_same_tree(runner, make_runner(seed=u))
        assert {k: v.tobytes() for k, v in h.items()} == {k: v.tobytes() for k, v in cut(full, u).items()}


def test_recorder_stops_on_nan_then_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(rf, "PLOT_EVERY_S", 1e12)
    run = tmp_path / "run"
    full = make_history(10)
    bad = {k: v.copy() for k, v in full.items()}
    bad["loss"][1, 5] = np.nan  # update 5 learns (grad_steps 4): a real divergence
    rec = _recorder(run, 2, keep=2)
    for done in (2, 4):
        rec.chunk(lambda: make_runner(seed=done), cut(bad, done, done - 2), np.ones(S, bool), done)
    ck4 = run / "checkpoints" / "state_u000000004.safetensors"
    assert rec.last_checkpoint == ck4
    with pytest.raises(rf.TrainingStopped) as e:
        rec.chunk(lambda: make_runner(seed=6), cut(bad, 6, 4), np.ones(S, bool), 6)
    msg = str(e.value)
    assert "non-finite loss (nan) at update 5 (seed_index 1)" in msg and f"last good checkpoint: {ck4}" in msg
    assert [p.name for p in ck.state_files(run)] == ["state_u000000002.safetensors", ck4.name]

    rec2 = _recorder(run, 2, keep=2)
    runner, done = rec2.resume(ck.latest_state(run), template_of(make_runner()))
    assert done == 4
    assert_same_tree(runner, make_runner(seed=4))
    assert (run / "metrics.csv").read_bytes() == _csv_bytes(tmp_path, cut(full, 4))
    hist = rec2.history()
    assert {k: v.tobytes() for k, v in hist.items()} == {k: v.tobytes() for k, v in cut(full, 4).items()}
    # training continues after the resume: the file grows exactly as in an uninterrupted run
    for done in (6, 8, 10):
        rec2.chunk(lambda: make_runner(seed=done), cut(full, done, done - 2), np.ones(S, bool), done)
    assert (run / "metrics.csv").read_bytes() == _csv_bytes(tmp_path, full, "full.csv")
    assert [p.name for p in ck.state_files(run)] == ["state_u000000006.safetensors", "state_u000000008.safetensors"]


def test_recorder_nan_before_any_checkpoint_and_nan_check_off(tmp_path, monkeypatch):
    monkeypatch.setattr(rf, "PLOT_EVERY_S", 1e12)
    m = make_history(4)
    m["qvals"][0, 3] = np.inf
    with pytest.raises(rf.TrainingStopped, match="no state checkpoint was saved before it"):
        _recorder(tmp_path / "a", 2).chunk(lambda: make_runner(), m, np.ones(S, bool), 4)
    assert ck.state_files(tmp_path / "a") == []
    with pytest.raises(rf.TrainingStopped, match=r"non-finite parameters after update 3 \(seed_index 0\)"):
        _recorder(tmp_path / "b", 2).chunk(lambda: make_runner(), make_history(4), np.array([False, True]), 4)
    rec = _recorder(tmp_path / "c", 2, nan_check=False)
    rec.chunk(lambda: make_runner(), m, np.array([False, False]), 4)  # runs on regardless
    assert [p.name for p in ck.state_files(tmp_path / "c")] == ["state_u000000004.safetensors"]


# ------------------------------------------------------------------------------------ 6. config compare


def test_config_differences():
    saved = {"SEED": 0, "NUM_SEEDS": 2, "PROGRESS": True, "WATCHDOG_TIMEOUT": 600, "CHECKPOINT_KEEP": 2,
             "alg": {"LR": 0.005, "NUM_ENVS": 8, "DEBUG": False, "LR_LINEAR_DECAY": True, "ENV_NAME": "MPE_x",
                     "ENV_KWARGS": {"num_agents": 3}}}
    now = {"SEED": 0, "NUM_SEEDS": 2.0, "PROGRESS": False, "WATCHDOG_TIMEOUT": 5, "CHECKPOINT_KEEP": 9,
           "alg": {"LR": 0.1, "NUM_ENVS": 8.0, "DEBUG": True, "LR_LINEAR_DECAY": True, "ENV_NAME": "MPE_y",
                   "ENV_KWARGS": {"num_agents": 4}, "NEW": 1}}
    keys = ["SEED", "NUM_SEEDS", "PROGRESS", "WATCHDOG_TIMEOUT", "CHECKPOINT_KEEP", "alg.LR", "alg.NUM_ENVS",
            "alg.DEBUG", "alg.LR_LINEAR_DECAY", "alg.ENV_NAME", "alg.ENV_KWARGS.num_agents", "alg.NEW",
            "alg.NOT_ANYWHERE"]
    diffs = rf.config_differences(saved, now, keys)
    assert diffs == ["alg.LR: 0.005 in the run, 0.1 now",
                     "alg.ENV_NAME: 'MPE_x' in the run, 'MPE_y' now",
                     "alg.ENV_KWARGS.num_agents: 3 in the run, 4 now",
                     "alg.NEW: '<not set>' in the run, 1 now"], diffs
    assert rf.config_differences(saved, saved, keys) == []
    assert rf.config_differences({"alg": {"LR": 1}}, {"alg": {"LR": 1.0}}, ["alg.LR"]) == []
    # numbers compare by value whatever their spelling ("2e6" is a string to YAML 1.1 loaders)
    assert rf.config_differences({"alg": {"T": "2e6"}}, {"alg": {"T": 2000000}}, ["alg.T"]) == []
    assert rf.config_differences({"alg": {"A": "rnn", "B": None}}, {"alg": {"A": "ff", "B": None}},
                                 ["alg.A", "alg.B"]) == ["alg.A: 'rnn' in the run, 'ff' now"]
    assert rf.config_differences({"SEED": 3}, {}, ["SEED"]) == ["SEED: 3 in the run, '<not set>' now"]


# ------------------------------------------------------------------------------ 7.-8. CLI helpers, keys


@pytest.mark.parametrize("value,num_updates,expected", [
    (0, 100, 0), (None, 100, 0), (0.0, 100, 0), ("0", 100, 0), (0.1, 100, 10), (0.001, 100, 1),
    (0.5, 3, 2), (5, 100, 5), (5.0, 100, 5), ("5", 100, 5), (1, 100, 1), (250, 100, 250)])
def test_checkpoint_every(value, num_updates, expected):
    got = checkpoint_every(value, num_updates)
    assert got == expected and isinstance(got, int)


@pytest.mark.parametrize("key,value,words", [
    ("NUM_SEEDS", 0, ">= 1"), ("CHECKPOINT_KEEP", 0, ">= 1"), ("CHECKPOINT_INTERVAL", -1, ">= 0"),
    ("NAN_CHECK", "yes", "True or False"), ("PROGRESS", 1, "True or False"), ("SEED", 1.5, "integer"),
    ("WANDB_MODE", "on", "disabled, offline or online"), ("CHECKPOINT_INTERVAL", "abc", "number"),
    ("NUM_SEEDS", True, "integer"), ("WATCHDOG_TIMEOUT", -5, ">= 0"), ("WANDB_LOG_ALL_SEEDS", "no", "True or False")])
def test_check_run_keys_rejects(key, value, words):
    with pytest.raises(ConfigError) as e:
        check_run_keys({"SEED": 0, "NUM_SEEDS": 1, key: value})
    assert str(e.value).startswith(key) and words in str(e.value), str(e.value)


def test_check_run_keys_accepts_the_shipped_defaults_and_valid_values():
    import yaml
    shipped = yaml.safe_load((Path(rf.__file__).parent.parent / "config" / "config.yaml").read_text())
    assert set(shipped) <= RUN_KEYS
    check_run_keys(shipped)
    check_run_keys({"SEED": -3, "NUM_SEEDS": 4, "CHECKPOINT_INTERVAL": None, "CHECKPOINT_KEEP": 1,
                    "NAN_CHECK": False, "PROGRESS": True, "WANDB_MODE": "offline", "WATCHDOG_TIMEOUT": 0,
                    "WANDB_LOG_ALL_SEEDS": True})
    check_run_keys({"CHECKPOINT_INTERVAL": "0.25"})
    check_run_keys({})


# ------------------------------------------------------------------------------------------- 9. precheck


@pytest.mark.parametrize("arg,message", [
    ("alg.LR_DECY=1", "unknown config key 'LR_DECY'"),
    ("+alg.LR_DECY=1", "did you mean 'LR_LINEAR_DECAY'?"),
    ("+FOO=1", "unknown run key 'FOO'"),
    ("NUM_SEEDZ=2", "did you mean 'NUM_SEEDS'?"),
    ("LR=0.1", "LR is an algorithm key: set it as alg.LR"),
    ("+MIXER_EMBEDDING_DIM=8", "MIXER_EMBEDDING_DIM is an algorithm key: set it as alg.MIXER_EMBEDDING_DIM"),
])
def test_precheck_rejects(arg, message):
    with pytest.raises(ConfigError) as e:
        precheck_keys(["+alg=qmix_mpe", "NUM_SEEDS=2", arg], "qmix_ps")
    assert message in str(e.value), str(e.value)


def test_precheck_accepts():
    precheck_keys(["alg.PRETRAINED_AGENTS.agent_0=x.safetensors", "hydra.run.dir=x", "+hydra.job.chdir=False",
                    "hydra/launcher=slurm_cpu", "+alg=qmix_mpe", "alg=qmix_mpe", "NUM_SEEDS=2", "alg.LR=0.1",
                    "-m", "--multirun", "alg.ENV_KWARGS.num_agents=3", "~alg.DEBUG", "RESUME=outputs/a/b",
                    "alg.LR=0.1,0.01"], "qmix_ps")
    precheck_keys([f"{k}=1" for k in sorted(RUN_KEYS)], "pqn_vdn")


# -------------------------------------------------------------------------------------- 10. unused folder


def _hydra_only(folder: Path, extra=()):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("SEED: 0\n")
    (folder / "run.log").write_text("")
    for name in extra:
        (folder / name).write_text("x")
    return folder


@pytest.mark.parametrize("relative", [False, True])
def test_remove_unused_run_dir_and_empty_parents(tmp_path, monkeypatch, relative):
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run = _hydra_only(cwd / "outputs" / "2026-01-01" / "10-00-00")
    remove_unused_run_dir(Path("outputs/2026-01-01/10-00-00") if relative else run)
    assert not (cwd / "outputs").exists() and cwd.is_dir()

    # a sibling run keeps the date folder
    run = _hydra_only(cwd / "outputs" / "2026-01-01" / "10-00-00")
    other = _hydra_only(cwd / "outputs" / "2026-01-01" / "09-00-00", extra=["metrics.csv"])
    remove_unused_run_dir(run)
    assert not run.exists() and sorted(p.name for p in other.iterdir()) == [".hydra", "metrics.csv", "run.log"]


def test_remove_unused_run_dir_keeps_a_used_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _hydra_only(tmp_path / "outputs" / "2026-01-01" / "10-00-00", extra=["metrics.csv"])
    remove_unused_run_dir(run)
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "metrics.csv", "run.log"]
    assert (run / ".hydra" / "config.yaml").is_file()
    remove_unused_run_dir(tmp_path / "does" / "not" / "exist")  # nothing to do, no error


def test_remove_unused_run_dir_outside_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run = _hydra_only(tmp_path / "elsewhere" / "a" / "run")
    remove_unused_run_dir(run)
    assert not run.exists()
    assert (tmp_path / "elsewhere" / "a").is_dir() and cwd.is_dir()  # empty, but outside cwd: untouched


def test_remove_unused_run_dir_never_deletes_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _hydra_only(cwd)
    remove_unused_run_dir(cwd)
    assert cwd.is_dir()


# ------------------------------------------------------------------------------------------- run_summary


def test_run_summary_is_strict_json(tmp_path):
    h = make_history(3)
    h["returned_episode_returns"] = np.array([[1, 2, 3], [4, 5, np.nan]], np.float32)
    h["test_returned_episode_returns"] = np.array([[1, 2, 3.5], [4, 5, 6.5]], np.float32)
    h["test_returned_episode_returns_std"] = np.array([[0, 0, 0.5], [0, 0, 0.25]], np.float32)
    timings = {"compile_s": 1.0, "run_s": 2.0, "steps_per_s": 100.0}
    out = run_summary(h, timings, "qmix_ps", "MPE_x", {"SEED": 3}, {"NUM_UPDATES": 3}, "finished", None)
    assert out["updates_done"] == 3 and out["env_steps"] == 384 and out["num_seeds"] == S and out["seed"] == 3
    assert float(out["final_greedy_return"]["mean"]) == 5.0 and "final_win_rate" not in out
    assert "win_rate" not in out["seeds"][0] and out["wall_time_s"] == 3.0
    path = ck.write_json(tmp_path / "summary.json", out)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert data["seeds"][1]["training_return"] is None and data["seeds"][0]["greedy_return"] == 3.5
    h["test_returned_won_episode"] = np.array([[0, 0, 1], [0, 0, 0]], np.float32)
    out = run_summary(h, timings, "qmix_ps", "SMAX_3m", {}, {"NUM_UPDATES": 3}, "finished", "x")
    assert out["final_win_rate"]["mean"] == 0.5 and [s["win_rate"] for s in out["seeds"]] == [1.0, 0.0]


def test_metrics_csv_with_config_and_seed_columns(tmp_path):
    """HYP_TUNE: runs are configurations x seeds; their index columns come first."""
    index = {"config": [0, 0, 1, 1], "seed_index": [0, 1, 0, 1]}
    m = {"env_step": np.array([[16, 32]] * 4, np.int32), "loss": np.arange(8, dtype=np.float32).reshape(4, 2)}
    out = rf.MetricsCSV(tmp_path / "metrics.csv", index)
    out.rewrite({k: v[:, :1] for k, v in m.items()})
    out.append({k: v[:, 1:] for k, v in m.items()}, 1)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "config,seed_index,update,env_step,loss"
    assert lines[3] == "1,0,0,16,4.0" and lines[8] == "1,1,1,32,7.0"
    back = rf.read_metrics_csv(tmp_path / "metrics.csv")
    np.testing.assert_array_equal(back["config"][:, 0], [0, 0, 1, 1])
    np.testing.assert_array_equal(back["loss"], m["loss"])
    with pytest.raises(ValueError, match="do not match the columns"):
        out.append({"loss": m["loss"]}, 2)


@pytest.mark.parametrize("n,size", [(1, 1), (40, 1), (1000, 10), (2403, 27), (100000, 1000), (9615, 15)])
def test_chunk_size_divides_and_aims_at_100_chunks(n, size):
    from purejaxql.driver import chunk_size
    assert chunk_size(n) == size and n % size == 0


# ----------------------------------------------------------------- 11. storage: size, free space, umask


@functools.lru_cache(maxsize=None)
def _buffer_program(runs: int, capacity: int):
    import flashbax as fbx
    buf = fbx.make_trajectory_buffer(add_batch_size=2, sample_batch_size=2, sample_sequence_length=2, period=1,
                                     min_length_time_axis=2, max_length_time_axis=capacity)
    item = {"obs": jnp.zeros((3, 40)), "avail": jnp.zeros((3, 40)), "done": jnp.zeros((3,), bool),
            "act": jnp.zeros((3,), jnp.int32)}

    def one_run(key, adds):
        def add(i, state):
            k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
            batch = {"obs": jax.random.normal(k1, (2, 1, 3, 40)), "avail": jnp.ones((2, 1, 3, 40)),
                     "done": jax.random.bernoulli(k2, 0.3, (2, 1, 3)),
                     "act": jax.random.randint(k3, (2, 1, 3), 0, 5)}
            return buf.add(state, batch)
        return {"buffer": jax.lax.fori_loop(0, adds, add, buf.init(item)), "w": jax.random.normal(key, (4,))}
    return jax.jit(jax.vmap(one_run, in_axes=(0, None)))


def filled_buffer(adds: int, runs: int = 2, capacity: int = 8):
    """A runner-like state holding a real flashbax trajectory buffer (runs x 2 envs x ``capacity`` time
    steps) after ``adds`` adds of random items, made by jitted code as in training."""
    return {"runner": _buffer_program(runs, capacity)(jax.random.split(jax.random.PRNGKey(adds), runs), adds),
            "hp": {}}


def stored_tensors(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("adds", [3, 11])
def test_a_replay_buffer_is_stored_up_to_its_filled_part_and_loads_bit_identical(tmp_path, adds):
    """Part-filled (3 of 8 time steps): only those are stored, the rest comes back as the zeros the live
    buffer holds there. Wrapped around (11 adds): all of it is stored."""
    state = filled_buffer(adds)
    path = ck.save_state(tmp_path, state, {}, adds, {}, keep=2)
    packed = ck.state_header(path)["packed"]
    stored = stored_tensors(path)
    names = [f"state/runner/buffer/experience/{k}" for k in ("act", "avail", "done", "obs")]
    assert sorted(n for n in stored if "/experience/" in n) == names
    obs = names[3]
    if adds < 8:
        assert {n: (packed[n]["axis"], packed[n]["length"]) for n in names} == {n: (2, 8) for n in names}
        assert stored[obs].shape == (2, 2, 3, 3, 40) and not packed[obs].get("zlib")  # random: not compressed
        assert np.asarray(state["runner"]["buffer"].experience["obs"])[:, :, 3:].tobytes() == \
            bytes(2 * 2 * 5 * 3 * 40 * 4)  # what is left out: zeros in the live buffer
    else:
        assert not any("axis" in packed.get(n, {}) for n in names) and stored[obs].shape == (2, 2, 8, 3, 40)
    assert packed[names[1]]["zlib"] and stored[names[1]].nbytes < 1000  # ones: compressed
    loaded, _, _ = ck.load_state(path, template_of(state))
    assert_same_tree(loaded, state)
    assert path.stat().st_size < sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)) * (0.7 if adds < 8 else 1)


def test_pack_tensors_round_trip_and_bad_recipes():
    rs = np.random.RandomState(0)
    special = np.tile(SPECIAL_BITS.view(np.float32), 2000)  # NaN payload, -0.0, denormal, inf: repetitive
    tensors = {"noise": np.frombuffer(rs.bytes(40000), np.float32).reshape(100, 100), "special": special,
               "flags": rs.rand(50, 200) > 0.9, "small": np.arange(10, dtype=np.int32),
               "part": np.concatenate([rs.rand(3, 5).astype(np.float32), np.zeros((4, 5), np.float32)])}
    stored, recipes = ck.pack_tensors(tensors, {"part": (0, 3), "noise": (1, 100)})
    assert sorted(recipes) == ["flags", "part", "special"]  # noise: incompressible, full; small: too small
    assert recipes["part"] == {"axis": 0, "length": 7} and stored["part"].shape == (3, 5)
    assert recipes["special"]["zlib"] and stored["special"].dtype == np.uint8
    assert stored["noise"] is tensors["noise"] or stored["noise"].tobytes() == tensors["noise"].tobytes()
    for name, x in tensors.items():
        back = ck.unpack_tensor(name, stored[name], recipes.get(name, {}))
        assert back.dtype == x.dtype and back.shape == x.shape and back.tobytes() == x.tobytes(), name
    z = stored["special"]
    with pytest.raises(ValueError, match="do not hold"):  # the recipe promises less than the data holds
        ck.unpack_tensor("special", z, {**recipes["special"], "shape": [10]})
    with pytest.raises(ValueError, match="do not hold"):
        ck.unpack_tensor("special", z, {**recipes["special"], "shape": [16000]})
    with pytest.raises(ValueError, match="do not hold"):  # cut short
        ck.unpack_tensor("special", z[: len(z) // 2], recipes["special"])
    with pytest.raises(ValueError, match="cannot be 2 long on axis 0"):
        ck.unpack_tensor("part", stored["part"], {"axis": 0, "length": 2})


def test_a_corrupt_packed_tensor_is_reported_by_name(tmp_path):
    state = filled_buffer(3)
    path = ck.save_state(tmp_path, state, {}, 3, {}, keep=2)
    tensors = stored_tensors(path)
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    name = "state/runner/buffer/experience/avail"
    tensors[name] = tensors[name][:-3]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ConfigError, match=r"corrupt or not a purejaxql training state.*experience/avail"):
        ck.load_state(path, template_of(state))


def test_no_room_for_a_state_checkpoint_stops_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(rf, "PLOT_EVERY_S", 1e12)
    run = tmp_path / "run"
    full = make_history(6)
    rec = _recorder(run, 2, num_updates=6, keep=1)
    rec.chunk(lambda: make_runner(seed=2), cut(full, 2), np.ones(S, bool), 2)
    kept = run / "checkpoints" / "state_u000000002.safetensors"
    before = kept.read_bytes()
    monkeypatch.setattr(ck, "free_bytes", lambda folder: 123_456)  # a nearly full disk
    with pytest.raises(rf.TrainingStopped) as e:
        rec.chunk(lambda: make_runner(seed=4), cut(full, 4, 2), np.ones(S, bool), 4)
    msg = str(e.value)
    assert msg.startswith(f"not enough free space in {run / 'checkpoints'} for state_u000000004.safetensors: "
                          "it needs ") and "123,456 are free" in msg, msg
    assert f"the newest state checkpoint, {kept}, is kept" in msg and f"RESUME={run}" in msg
    needed = int(msg.split("it needs ")[1].split(" bytes")[0].replace(",", ""))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [kept.name]  # nothing new, nothing deleted
    assert kept.read_bytes() == before
    monkeypatch.setattr(ck, "free_bytes", lambda folder: 10**15)
    written = ck.save_state(run, make_runner(seed=4), cut(full, 4), 4, rec.header, keep=1)
    assert written.stat().st_size == needed  # the check counted the bytes the file takes
    # a disk that fills up while writing: ENOSPC -> NotEnoughSpace, no partial file, the old version kept

    def disk_full(tmp):
        Path(tmp).write_bytes(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(ck.NotEnoughSpace, match=r"no space left in .* while writing state_u000000004"):
        ck.atomic_write(written, disk_full)
    assert not list((run / "checkpoints").glob("*.tmp")) and written.stat().st_size == needed


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    final = tmp_path / "checkpoints" / "seed0_0.safetensors"
    final.parent.mkdir()
    stale = final.with_name(final.name + ".tmp")  # left by a killed run, with another mode
    stale.write_bytes(b"x")
    stale.chmod(0o600 if mode != 0o600 else 0o644)
    old = os.umask(umask)
    try:
        ck.save_checkpoint(final, {"agent": {"w": np.ones(3, np.float32)}, "mixer": {}}, {"module": "vdn_ps"})
        state = ck.save_state(tmp_path, make_runner(), make_history(2), 2, {}, keep=2)
        rf.MetricsCSV(tmp_path / "metrics.csv").rewrite(make_history(2))
        ck.write_json(tmp_path / "summary.json", {"a": 1})
    finally:
        os.umask(old)
    for f in (final, final.with_suffix(".yaml"), state, tmp_path / "metrics.csv", tmp_path / "summary.json"):
        assert stat.S_IMODE(f.stat().st_mode) == mode, (f.name, oct(f.stat().st_mode))
    assert not stale.exists()


# ------------------------------------------------------- 12. one scheme for both kinds, and the files before it


def stored_header(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    assert list(meta) == [ck.HEADER_KEY], meta  # one metadata entry, whatever the kind
    return json.loads(meta[ck.HEADER_KEY])


def test_one_header_and_naming_scheme_for_parameters_and_states(tmp_path):
    """Both kinds: one metadata entry ("purejaxql") with format and kind beside the caller's info; tensors
    named by their pytree path joined with "/": dict keys, NamedTuple attribute names, sequence indices."""
    params = {"agent": {"params": {"Dense_0": {"kernel": np.full((3, 2), 1.5, np.float32),
                                               "bias": np.zeros(2, np.float32)}}},
              "mixer": {"hyper": {"w": np.arange(4, dtype=np.int32)}}}
    info = {"module": "vdn_ps", "variant": "ps", "agents": ["agent_0"], "config": {"LR": 0.1, "ENV_KWARGS": {}},
            "final_eval_key": [1, 2]}
    p = ck.save_checkpoint(tmp_path / "seed0_0.safetensors", params, info)
    assert stored_header(p) == {"format": ck.FORMAT, "kind": "params", **info}
    assert sorted(stored_tensors(p)) == ["agent/params/Dense_0/bias", "agent/params/Dense_0/kernel", "mixer/hyper/w"]
    loaded, got = ck.load_checkpoint(p)
    assert got == info
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()

    state = legacy.legacy_state()  # a tuple of NamedTuples in opt_state, a typed key, a packable buffer
    s = ck.save_state(tmp_path, state, legacy.HISTORY, 3, legacy.STATE_INFO, keep=1)
    header = stored_header(s)
    assert {k: header[k] for k in ("format", "kind", "updates_done")} == {"format": ck.FORMAT, "kind": "state",
                                                                         "updates_done": 3}
    assert {k: header[k] for k in legacy.STATE_INFO} == legacy.STATE_INFO and header == ck.state_header(s)
    assert sorted(stored_tensors(s)) == [
        "metrics/env_step", "metrics/loss", "state/buffer/current_index", "state/buffer/experience/act",
        "state/buffer/experience/avail", "state/buffer/experience/obs", "state/buffer/is_full", "state/first",
        "state/key", "state/rng", "state/train/n_updates", "state/train/opt_state/0/count",
        "state/train/opt_state/0/mu/agent", "state/train/opt_state/1/scale", "state/train/params/agent/Dense_0/bias",
        "state/train/params/agent/Dense_0/kernel", "state/train/params/agent/special", "state/train/params/mixer/w"]
    assert header["packed"]["state/buffer/experience/avail"] == {"axis": 2, "length": 8, "zlib": True,
                                                                 "dtype": "float32", "shape": [2, 2, 3, 3, 40]}
    loaded, hist, _ = ck.load_state(s, template_of(state))
    assert_same_tree(loaded, state)
    assert {k: v.tobytes() for k, v in hist.items()} == {k: v.tobytes() for k, v in legacy.HISTORY.items()}

    with pytest.raises(ValueError, match=r"may not use the header fields \['kind', 'packed'\]"):
        ck.save_checkpoint(tmp_path / "x.safetensors", params, {**info, "kind": "mine", "packed": 1})
    with pytest.raises(ValueError, match="both named 'a/b'"):
        ck.save_checkpoint(tmp_path / "x.safetensors", {"a/b": np.ones(1), "a": {"b": np.ones(1)}}, {})
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("fmt", [1, 2])
def test_state_checkpoints_of_the_old_formats_load_bit_for_bit(tmp_path, fmt):
    """purejaxql-train-state/1 and /2, as the old code wrote them: header key "purejaxql_state", tensors named
    "state" + keystr(path); /2 with the buffer cut to its filled part and a zlib-compressed tensor."""
    path = legacy.FIXTURES / f"state_format{fmt}.safetensors"
    state = legacy.legacy_state()
    raw = stored_tensors(path)
    avail = "state.buffer.experience['avail']"
    assert "state.train.opt_state[0].mu['agent']" in raw and raw["state.key"].dtype == np.uint32
    assert raw[avail].dtype == (np.uint8 if fmt == 2 else np.float32)  # /2: packed, what unpacking must undo

    header = ck.state_header(path)
    assert header["format"] == f"purejaxql-train-state/{fmt}" and header["kind"] == "state"
    assert header["updates_done"] == legacy.UPDATES and header["module"] == "qmix_ps"
    assert {k: header[k] for k in legacy.STATE_INFO} == legacy.STATE_INFO
    if fmt == 2:
        assert header["packed"][avail]["zlib"] and header["packed"][avail]["axis"] == 2
        assert header["packed"]["state.buffer.experience['obs']"] == {"axis": 2, "length": 8}
    loaded, hist, h = ck.load_state(path, template_of(state))
    assert h == header
    assert isinstance(loaded, legacy.Runner) and isinstance(loaded.train.opt_state[0], legacy.Adam)
    assert jax.dtypes.issubdtype(loaded.key.dtype, jax.dtypes.prng_key)
    assert_same_tree(loaded, state)  # the special float bits, the buffer's zeros, the key data included
    assert list(hist) == list(legacy.HISTORY)
    for k, v in legacy.HISTORY.items():
        assert hist[k].dtype == v.dtype and hist[k].tobytes() == v.tobytes(), k

    # a program whose state does not fit: the error names the file and the leaf by its name in that file
    tmpl = template_of(state)
    mu = tmpl.train.opt_state[0].mu["agent"]
    bad = tmpl._replace(train=tmpl.train._replace(opt_state=(
        tmpl.train.opt_state[0]._replace(mu={"agent": jax.ShapeDtypeStruct((S, 3, 5), mu.dtype)}),
        tmpl.train.opt_state[1])))
    with pytest.raises(ConfigError) as e:
        ck.load_state(path, bad)
    assert str(e.value) == (f"state checkpoint {str(path)!r} does not fit this run: state.train.opt_state[0]"
                            ".mu['agent'] is float32[2, 3, 4], the program expects float32[2, 3, 5]")
    # and written again, it is a checkpoint of the new scheme holding the same
    again = ck.save_state(tmp_path, loaded, hist, legacy.UPDATES, legacy.STATE_INFO, keep=1)
    assert stored_header(again)["format"] == ck.FORMAT
    assert_same_tree(ck.load_state(again, tmpl)[0], state)


def test_parameter_checkpoints_from_before_the_format_field_load_as_before():
    """Parameters as the old code wrote them (header "purejaxql" holding the info alone): the same params
    and info as before, the shipped pretrained prey included."""
    path = legacy.FIXTURES / "params_vdn_ns.safetensors"
    assert stored_header(path) == legacy.PARAMS_INFO  # no format, no kind
    params, info = ck.load_checkpoint(path)
    assert info == legacy.PARAMS_INFO
    want = {"agent": legacy.legacy_params()["agent"]}  # an empty mixer has no tensors: not in the file
    assert jax.tree.structure(params) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    own = ck.agent_params(path, "agent_1")  # ns: the agent's slice
    assert own["params"]["GRU_0"]["w_hn"].tobytes() == want["agent"]["params"]["GRU_0"]["w_hn"][1].tobytes()

    shipped = Path(ck.__file__).parent / "checkpoints" / "MPE_simple_tag_v3_prey_iql_ps.safetensors"
    raw, raw_info = stored_tensors(shipped), stored_header(shipped)
    assert "kind" not in raw_info and "agent/params/Dense_0/kernel" in raw
    params, info = ck.load_checkpoint(shipped)
    assert info == raw_info and info["module"] == "iql_ps" and info["final_eval_key"] == [1684704164, 3055658255]
    flat = {"/".join(k.key for k in p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert sorted(flat) == sorted(raw) and all(flat[k].tobytes() == raw[k].tobytes() for k in raw)
    assert jax.tree.structure(ck.load_params(shipped)) == jax.tree.structure(params)
    prey = ck.agent_params(shipped, "agent_0")  # ps: the shared set
    assert prey["params"]["GRU_0"]["w_hn"].tobytes() == raw["agent/params/GRU_0/w_hn"].tobytes()


def test_write_json_is_strict_and_write_text_atomic(tmp_path):
    path = ck.write_json(tmp_path / "sub" / "x.json", {"nan": float("nan"), "inf": np.float32(-np.inf),
                                                       "n": np.int64(3), "t": (1.5, np.float64(np.inf))})
    assert path.read_text() == '{\n  "nan": null,\n  "inf": null,\n  "n": 3,\n  "t": [\n    1.5,\n    null\n  ]\n}\n'
    text = tmp_path / "t.txt"
    assert ck.write_text(text, "a\nb") == text and text.read_text() == "a\nb"
