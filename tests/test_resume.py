"""Runs you can trust: the run folder, kill -9 + RESUME bit-identity (at XLA's default optimisation level),
proof that the resumed process continued from the checkpoint, determinism, NAN_CHECK (CLI runs)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_cases import cli_cases
from purejaxql.checkpoint import latest_state
from resume_tools import assert_resumed_from, assert_same_params, params_differ, perturb_rng, use_compilation_cache

# QMIX (replay buffer, target network, GRU hidden states, mixer): the most state to get right. The buffer
# holds 16 sequences per env: it is part-filled at the checkpoint resumed from and wraps around after it.
RUN = ["+alg=qmix_mpe", "alg.NUM_ENVS=2", "alg.NUM_STEPS=8", "alg.TOTAL_TIMESTEPS=480", "alg.BUFFER_SIZE=32",
       "alg.BUFFER_BATCH_SIZE=2", "alg.AGENT_HIDDEN_DIM=8", "alg.LEARNING_STARTS=0", "alg.TEST_NUM_ENVS=2",
       "alg.TARGET_UPDATE_INTERVAL=2", "alg.TEST_INTERVAL=0.1", "alg.TEST_NUM_STEPS=26", "NUM_SEEDS=2",
       "SEED=7", "CHECKPOINT_INTERVAL=4", "CHECKPOINT_KEEP=2", "PROGRESS=False"]


def launch(module, *args, cwd, pause=0.0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["PUREJAXQL_CHUNK_PAUSE"] = str(pause)  # fault injection: sleep after each chunk
    return subprocess.Popen([sys.executable, "-m", f"purejaxql.{module}", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=400):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def wait_for(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(560)
def test_kill_9_then_resume_is_bit_identical_and_runs_are_deterministic(tmp_path, tmp_path_factory, monkeypatch):
    # XLA's default optimisation level, as users run; the victim and the resumed runs load the program the
    # reference compiled from JAX's persistent compilation cache
    use_compilation_cache(monkeypatch, tmp_path_factory.mktemp("jax_cache"), default_opt_level=True)
    ref = launch("qmix_ps", *RUN, "hydra.run.dir=ref", cwd=tmp_path)
    assert wait_for(lambda: (tmp_path / "ref" / "metrics.csv").exists() or ref.poll() is not None, 400)
    victim = launch("qmix_ps", *RUN, "hydra.run.dir=victim", cwd=tmp_path, pause=0.25)
    folder = tmp_path / "victim"
    # kill -9 once a state checkpoint exists and the run has gone past it
    assert wait_for(lambda: (folder / "checkpoints" / "state_u000000008.safetensors").exists()
                    or victim.poll() is not None, 300), "no state checkpoint appeared"
    assert victim.poll() is None, victim.communicate()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (folder / "summary.json").exists()  # killed mid-run
    before_kill = (folder / "metrics.csv").read_bytes()
    code, out, err = finish(ref)
    assert code == 0, err[-3000:]
    ref_csv = (tmp_path / "ref" / "metrics.csv").read_bytes()
    assert len(ref_csv.splitlines()) == 1 + 2 * 30  # header + 30 updates x 2 seeds
    # determinism: another process with the same seed and config wrote the same rows, byte for byte
    rows = before_kill[:before_kill.rfind(b"\n") + 1]  # the last row may be cut by the kill
    assert len(rows.splitlines()) >= 1 + 2 * 8 and ref_csv.startswith(rows)
    # the same folder with another (valid) RNG key in its newest state checkpoint
    shutil.copytree(folder, tmp_path / "perturbed")
    at = perturb_rng(latest_state(tmp_path / "perturbed"))

    # in one process: a changed config is refused, naming the keys; so is another module. Then the resumes,
    # with the run's own command line (+ a result-neutral change)
    cases = cli_cases([("qmix_ps", ["RESUME=victim", "alg.LR=0.1", "NUM_SEEDS=3", "PROGRESS=True"]),
                       ("vdn_ps", ["RESUME=victim"]),
                       ("qmix_ps", [*RUN, "RESUME=victim", "WATCHDOG_TIMEOUT=300"]),
                       ("qmix_ps", ["RESUME=perturbed"])], tmp_path / "cases", cwd=tmp_path)
    bad = cases[:2]
    assert [r["code"] for r in cases] == [2, 2, 0, 0], [r["err"][-3000:] for r in cases]
    err = bad[0]["err"]
    assert "alg.LR: 0.005 in the run, 0.1 now" in err and "NUM_SEEDS: 2 in the run, 3 now" in err
    assert "PROGRESS" not in err.split("changes what the run computes")[1]  # result-neutral
    assert "that run was trained by qmix_ps" in bad[1]["err"]
    assert bad[0]["after"] == bad[0]["before"] and bad[1]["after"] == bad[1]["before"]

    # resumed: same metrics as never stopped
    assert (folder / "metrics.csv").read_bytes() == ref_csv
    done = json.loads((folder / "summary.json").read_text())
    want = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert done["status"] == "finished" and done["resumed_from"].startswith("victim")
    assert done["seeds"] == want["seeds"] and done["final_greedy_return"] == want["final_greedy_return"]
    assert_same_params(tmp_path / "ref", folder, ["seed7_0.safetensors", "seed7_1.safetensors"])  # final params too
    # the run folder has everything, and at most CHECKPOINT_KEEP state checkpoints
    for name in ("config.yaml", "metrics.csv", "summary.json", "training_plots.png"):
        assert (folder / name).is_file(), name
    assert len(list((folder / "checkpoints").glob("state_u*.safetensors"))) <= 2
    assert not list(folder.rglob("*.tmp"))
    assert want["versions"]["jax"] and want["env_steps"] == 480 and want["num_seeds"] == 2
    # the perturbed resume continued from its checkpoint: rows before it as the reference's, all after differ
    assert_resumed_from(tmp_path / "ref" / "metrics.csv", tmp_path / "perturbed" / "metrics.csv", at)
    assert params_differ(tmp_path / "ref", tmp_path / "perturbed", "seed7_0.safetensors")


@pytest.mark.timeout(400)
def test_nan_check_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # rewards x 1e38 overflow the TD target once learning starts: the loss becomes non-finite
    r = subprocess.run([sys.executable, "-m", "purejaxql.vdn_ps", "+alg=vdn_mpe", "alg.NUM_ENVS=2",
                        "alg.NUM_STEPS=8", "alg.TOTAL_TIMESTEPS=160", "alg.BUFFER_SIZE=16",
                        "alg.BUFFER_BATCH_SIZE=2", "alg.AGENT_HIDDEN_DIM=8", "alg.LEARNING_STARTS=16",
                        "alg.TEST_NUM_ENVS=2", "alg.TARGET_UPDATE_INTERVAL=2", "alg.REW_SCALE=1e38",
                        "CHECKPOINT_INTERVAL=1", "hydra.run.dir=run", "PROGRESS=False"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=380)
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    assert "training stopped: non-finite loss" in r.stderr and "at update 1 " in r.stderr, r.stderr
    assert "last good checkpoint: " in r.stderr and "/run/checkpoints/state_u000000001.safetensors" in r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"].startswith("stopped: non-finite loss")
    states = sorted((tmp_path / "run" / "checkpoints").glob("state_u*.safetensors"))
    assert [p.name for p in states] == ["state_u000000001.safetensors"]  # nothing saved after it
    assert not list((tmp_path / "run" / "checkpoints").glob("seed*"))  # no final parameters
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # updates 0 and 1 (the one that diverged)
