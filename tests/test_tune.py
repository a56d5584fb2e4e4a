"""HYP_TUNE and scale-out: a vmapped hyperparameter grid computes what separate runs compute, a tiny offline
sweep (traced + structural keys) ranks its configurations, runs sharded over two devices match one device."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TINY = {"ENV_NAME": "MPE_simple_spread_v3", "NUM_ENVS": 2, "NUM_STEPS": 8, "TOTAL_TIMESTEPS": 160,
        "BUFFER_SIZE": 16, "BUFFER_BATCH_SIZE": 2, "AGENT_HIDDEN_DIM": 8, "LEARNING_STARTS": 0,
        "TEST_NUM_ENVS": 2, "TEST_NUM_STEPS": 26, "TARGET_UPDATE_INTERVAL": 2}


def train_runs(config, seed, num_seeds, hparams=None, batching="vmap"):
    from purejaxql import vdn_ps
    from purejaxql.driver import run_training
    from purejaxql.environments import make_env
    env = make_env(config)
    _, metrics, _ = run_training(lambda traced: vdn_ps.make_train({**config, **traced}, env), seed, num_seeds,
                                 progress=False, watchdog_timeout=0, hparams=hparams, batching=batching)
    return metrics


@pytest.mark.timeout(300)
def test_a_vmapped_grid_point_computes_what_a_separate_run_computes():
    from purejaxql.config import ConfigError
    from purejaxql.tuning import tune_grid
    # grid: LR x GAMMA = 2 x 2 configurations, 1 seed each, one program
    points = [{"LR": lr, "GAMMA": g} for lr in (0.001, 0.02) for g in (0.9, 0.99)]
    grid = train_runs(TINY, 3, 1, {k: np.array([p[k] for p in points], np.float32) for k in ("LR", "GAMMA")})
    alone = train_runs({**TINY, "LR": 0.02, "GAMMA": 0.9}, 3, 1)  # configuration 2, as its own run
    assert grid["loss"].shape == (4, 10)
    np.testing.assert_allclose(grid["loss"][2], alone["loss"][0], rtol=2e-4)
    np.testing.assert_allclose(grid["qvals"][2], alone["qvals"][0], rtol=2e-4)
    np.testing.assert_array_equal(grid["env_step"][2], alone["env_step"][0])
    # the hyperparameters are really used: each configuration learns differently from the same seed
    learned = grid["loss"][:, 2:]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.allclose(learned[a], learned[b]), (points[a], points[b])
    # grid points are checked like configs
    from purejaxql import vdn_ps
    from purejaxql.environments import make_env
    cfg = vdn_ps.make_train(TINY, make_env(TINY)).config
    with pytest.raises(ConfigError, match=r"TUNE grid point \{'GAMMA': 1.5\}: GAMMA must be in \(0, 1\]"):
        tune_grid({**cfg, "TUNE": {"GAMMA": [0.9, 1.5]}}, vdn_ps.SPEC, make_env(TINY))


@pytest.mark.timeout(300)
def test_runs_one_after_another_compute_what_vmapped_runs_compute():
    """SEED_BATCHING=map (lax.map over the runs) and vmap: the same runs (2 learning rates x 2 seeds)."""
    from purejaxql.config import ConfigError
    from purejaxql.driver import run_training
    hp = {"LR": np.repeat(np.array([0.001, 0.02], np.float32), 2)}
    mapped, vmapped = (train_runs(TINY, 5, 2, hp, batching=b) for b in ("map", "vmap"))
    assert mapped["loss"].shape == vmapped["loss"].shape == (4, 10)
    for key in ("loss", "qvals", "test_returned_episode_returns"):
        np.testing.assert_allclose(mapped[key], vmapped[key], rtol=2e-4, atol=1e-6)
    assert not np.allclose(mapped["loss"][0, 2:], mapped["loss"][1, 2:])  # the seeds differ
    with pytest.raises(ConfigError, match="SEED_BATCHING must be vmap or map, got 'loop'"):
        run_training(lambda traced: None, 0, 1, batching="loop")


@pytest.mark.timeout(500)
def test_hyp_tune_sweep_offline_ranks_every_configuration(tmp_path):
    """AGENT_HIDDEN_DIM changes shapes (hydra multirun, one compile each); LR is vmapped with the seeds."""
    args = ["+alg=vdn_mpe", *(f"alg.{k}={v}" for k, v in TINY.items() if k != "ENV_NAME"), "HYP_TUNE=True",
            "TUNE_NUM_SEEDS=2", "~alg.TUNE.GAMMA", "~alg.TUNE.LR", "+alg.TUNE.LR=[0.001,0.02]", "+alg.TUNE.AGENT_HIDDEN_DIM=[8,16]",
            "hydra.sweep.dir=sweep", "PROGRESS=False"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    r = subprocess.run([sys.executable, "-m", "purejaxql.vdn_ps", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "AGENT_HIDDEN_DIM change the program's shapes: hydra multirun" in r.stdout
    assert r.stdout.count("HYP_TUNE: 2 configurations x 2 seeds in one program") == 2  # one per structure
    sweep = tmp_path / "sweep"
    from purejaxql.tuning import read_table
    rows = read_table(sweep / "tune.csv")
    assert len(rows) == 4
    assert sorted((row["AGENT_HIDDEN_DIM"], row["LR"]) for row in rows) == [(8, 0.001), (8, 0.02), (16, 0.001),
                                                                           (16, 0.02)]
    means = [row["return_mean"] for row in rows]
    assert means == sorted(means, reverse=True) and [row["rank"] for row in rows] == [1, 2, 3, 4]
    for row in rows:  # mean and std over the 2 seeds
        seeds = [row["return_seed0"], row["return_seed1"]]
        assert row["return_mean"] == pytest.approx(np.mean(seeds)) and row["return_std"] == pytest.approx(np.std(seeds))
        assert row["return_mean"] < 0
    assert "ranked by final greedy return" in r.stdout and "AGENT_HIDDEN_DIM" in r.stdout.splitlines()[-6]
    assert (sweep / "tune_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for job in ("0", "1"):  # each structure's run folder has its own ranking, metrics per config and seed
        assert len(read_table(sweep / job / "tune.csv")) == 2
        head = (sweep / job / "metrics.csv").read_text().splitlines()[0]
        assert head.startswith("config,seed_index,update,")


SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from test_tune import TINY, train_runs
    m = train_runs(TINY, 5, 4)
    np.savez({out!r}, **m)
    print(json.dumps({{"devices": len(jax.local_devices())}}))
""")


@pytest.mark.timeout(400)
def test_seeds_sharded_over_two_devices_match_one_device(tmp_path):
    out = tmp_path / "two.npz"
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    code = SHARDED.format(tests=os.path.dirname(__file__), out=str(out))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=380)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["devices"] == 2
    two = dict(np.load(out))
    one = train_runs(TINY, 5, 4)  # this process: one device
    assert set(two) == set(one)
    # the same program per device, on a batch of 2 runs instead of 4: XLA:CPU may pick other kernels for the
    # smaller batch, so float results agree to rounding (measured: max relative difference ~1e-6); counters
    # and the acting (env steps, ε) agree exactly
    for k in ("env_step", "update_steps", "grad_steps", "epsilon"):
        np.testing.assert_array_equal(two[k], one[k], err_msg=k)
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-4, err_msg=k)
    diff = {k: float(np.nanmax(np.abs(two[k] - one[k]))) for k in one}
    print("max abs difference per metric:", diff)


def test_run_shardings_split_runs_evenly():
    import jax
    from purejaxql.driver import run_shardings
    runs, replicated = run_shardings(4)
    assert runs.mesh.devices.size == len(jax.local_devices()) == 1  # this process has one CPU device
    assert runs.spec == jax.sharding.PartitionSpec("runs") and replicated.spec == jax.sharding.PartitionSpec()
