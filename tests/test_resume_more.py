"""RESUME beyond QMIX, and proof that it resumed. Three tiny runs cover the other kinds of state: PQN with GRU
agents and a memory window (its context window is carried between updates) and per-agent networks
(pqn_ns); frozen pretrained agents with a HYP_TUNE grid in one program (qmix_ps_pretrained: a replay
buffer of the learning agents only, part-filled at the checkpoint, and each run's traced hyperparameters);
VDN on Level-Based Foraging (an env state from Jumanji's adapter, REW_NORM's running statistics, a HYP_TUNE grid).

Each run goes to the end keeping every state checkpoint; copies of its folder as a crash after a checkpoint
would leave them are resumed: one as it is must end byte-identical to the uninterrupted run, one whose
checkpoint holds another RNG key must match it before the checkpoint and differ from it after, which a
process that ignored the checkpoint and recomputed from update 0 cannot do. Three processes in all (the
runs, then all four resumes in one), which share compiled programs through JAX's persistent cache."""
import json

import pytest
from cli_cases import cli_cases
from purejaxql.checkpoint import state_files
from resume_tools import (assert_resumed_from, assert_same_params, crash_copy, params_differ, perturb_rng,
                          use_compilation_cache)

AT = 6  # the state checkpoint the crash copies resume from (of 12 updates, every 3 kept)
KEEP_ALL = ["CHECKPOINT_INTERVAL=3", "CHECKPOINT_KEEP=100", "PROGRESS=False"]
RUNS = {
    "pqn_ns": ["+alg=pqn_mpe", "alg.AGENT_TYPE=rnn", "alg.MEMORY_WINDOW=4", "alg.NUM_LAYERS=1",
               "alg.AGENT_HIDDEN_DIM=8", "alg.NUM_ENVS=4", "alg.NUM_STEPS=8", "alg.TOTAL_TIMESTEPS=384",
               "alg.NUM_EPOCHS=1", "alg.NUM_MINIBATCHES=2", "alg.TEST_NUM_ENVS=2", "alg.TEST_INTERVAL=0.25",
               "NUM_SEEDS=2", "SEED=5"],
    "qmix_ps_pretrained": ["+alg=qmix_mpe_tag_pretrained", "alg.NUM_ENVS=2", "alg.NUM_STEPS=8",
                           "alg.TOTAL_TIMESTEPS=192", "alg.BUFFER_SIZE=16", "alg.BUFFER_BATCH_SIZE=2",
                           "alg.AGENT_HIDDEN_DIM=8", "alg.MIXER_EMBEDDING_DIM=4",
                           "alg.MIXER_HYPERNET_HIDDEN_DIM=8", "alg.LEARNING_STARTS=0", "alg.TEST_NUM_ENVS=2",
                           "alg.TARGET_UPDATE_INTERVAL=2", "alg.TEST_INTERVAL=0.25", "HYP_TUNE=True",
                           "TUNE_NUM_SEEDS=1", "~alg.TUNE.GAMMA", "~alg.TUNE.LR", "+alg.TUNE.LR=[0.001,0.02]",
                           "SEED=2"],
    # an environment family behind the adapter interface (Jumanji's LBF), its REW_NORM state, a HYP_TUNE grid
    "vdn_ps": ["+alg=vdn_lbf", "alg.TASK=5x5-2p-1f", "+alg.ENV_KWARGS.time_limit=10", "alg.NUM_ENVS=2",
               "alg.NUM_STEPS=8", "alg.TOTAL_TIMESTEPS=192", "alg.NUM_EPOCHS=1", "alg.BUFFER_SIZE=16",
               "alg.BUFFER_BATCH_SIZE=2", "alg.AGENT_HIDDEN_DIM=8", "alg.LEARNING_STARTS=0", "alg.TEST_NUM_ENVS=2",
               "alg.TARGET_UPDATE_INTERVAL=2", "alg.TEST_INTERVAL=0.25", "HYP_TUNE=True", "TUNE_NUM_SEEDS=1",
               "~alg.TUNE.GAMMA", "~alg.TUNE.LR", "+alg.TUNE.LR=[0.001,0.02]", "SEED=4"],
}
FINAL = {"pqn_ns": ["seed5_0.safetensors", "seed5_1.safetensors"], "qmix_ps_pretrained": ["seed2_0.safetensors"],
         "vdn_ps": ["seed4_0.safetensors"]}


@pytest.mark.slow   # siblings in the default run: QMIX's kill -9 resume, PER + REW_NORM resume, chunked PQN
@pytest.mark.timeout(600)
def test_resumes_continue_from_their_checkpoint(tmp_path, tmp_path_factory, monkeypatch):
    use_compilation_cache(monkeypatch, tmp_path_factory.mktemp("jax_cache"))
    runs = cli_cases([(m, [*args, *KEEP_ALL, f"hydra.run.dir=ref_{m}"]) for m, args in RUNS.items()],
                     tmp_path / "runs", cwd=tmp_path)
    assert [r["code"] for r in runs] == [0] * len(RUNS), [r["err"][-3000:] for r in runs]
    for m in RUNS:
        assert [int(p.name[7:16]) for p in state_files(tmp_path / f"ref_{m}")] == [3, 6, 9]
        crash_copy(tmp_path / f"ref_{m}", tmp_path / f"crash_{m}", AT)
        crash_copy(tmp_path / f"ref_{m}", tmp_path / f"perturbed_{m}", AT)
        assert perturb_rng(tmp_path / f"perturbed_{m}" / "checkpoints" / f"state_u{AT:09d}.safetensors") == AT

    resumed = cli_cases([(m, [f"RESUME={kind}_{m}"]) for m in RUNS for kind in ("crash", "perturbed")],
                        tmp_path / "resumes", cwd=tmp_path)
    assert [r["code"] for r in resumed] == [0] * 2 * len(RUNS), [r["err"][-3000:] for r in resumed]
    for m in RUNS:
        ref, crash, perturbed = (tmp_path / f"{kind}_{m}" for kind in ("ref", "crash", "perturbed"))
        # resumed as it was: what the uninterrupted run wrote, byte for byte
        assert (crash / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes(), m
        assert_same_params(ref, crash, FINAL[m])
        done, want = (json.loads((f / "summary.json").read_text()) for f in (crash, ref))
        assert done["status"] == "finished" and done["resumed_from"] == f"crash_{m}/checkpoints/state_u{AT:09d}" \
            ".safetensors"
        assert done["seeds"] == want["seeds"] and done.get("tune") == want.get("tune"), m
        assert not list(crash.rglob("*.tmp")) and not list(perturbed.rglob("*.tmp"))
        # resumed from the perturbed checkpoint: continued from it
        assert_resumed_from(ref / "metrics.csv", perturbed / "metrics.csv", AT)
        assert params_differ(ref, perturbed, FINAL[m][0]), m
    tune = "qmix_ps_pretrained"  # HYP_TUNE: the ranking is the same too
    assert (tmp_path / f"crash_{tune}" / "tune.csv").read_bytes() == (tmp_path / f"ref_{tune}" / "tune.csv").read_bytes()
    assert json.loads((tmp_path / f"ref_{tune}" / "summary.json").read_text())["tune"]["configurations"] == 2
