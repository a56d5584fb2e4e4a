"""The command line: every shipped alg config runs with a tiny budget; defaults and bad input are clear."""
import re
import subprocess
import sys

import pytest
from cli_cases import cli_cases
from shipped import cli

TINY = ["alg.NUM_ENVS=2", "alg.NUM_STEPS=8", "alg.TOTAL_TIMESTEPS=64", "alg.BUFFER_SIZE=16",
        "alg.BUFFER_BATCH_SIZE=2", "alg.AGENT_HIDDEN_DIM=8", "alg.LEARNING_STARTS=0",
        "alg.TEST_NUM_ENVS=2", "alg.NUM_EPOCHS=1", "alg.TARGET_UPDATE_INTERVAL=2"]
PQN_TINY = ["alg.NUM_ENVS=2", "alg.NUM_STEPS=8", "alg.TOTAL_TIMESTEPS=64", "alg.AGENT_HIDDEN_DIM=8",
            "alg.TEST_NUM_ENVS=2", "alg.NUM_EPOCHS=1", "alg.NUM_MINIBATCHES=2"]


@pytest.mark.timeout(520)
@pytest.mark.parametrize("alg,envname", [
    pytest.param("iql", "smax", marks=pytest.mark.slow), ("vdn", "mpe"),
    pytest.param("vdn", "smax", marks=pytest.mark.slow), pytest.param("qmix", "mpe", marks=pytest.mark.slow),
    pytest.param("qmix", "smax", marks=pytest.mark.slow), pytest.param("pqn", "smax", marks=pytest.mark.slow)])
# iql_mpe: the default-alg test below; pqn_mpe: the pretrained showcase (its config builds on pqn_mpe);
# qmix_mpe: tests/test_resume.py runs it through the CLI three times; qmix_smax (slow, 60 s: SMAX's compile):
# tests/test_train.py trains QMIX on SMAX with wins in the default suite; iql/vdn_smax (slow) share everything
# but the loss with qmix_smax; pqn_smax (slow): tests/test_defaults.py resolves it, and test_pqn.py trains
# pqn_ns with its GRU + BatchNorm agents on SMAX
def test_each_alg_config_runs(alg, envname, tmp_path):
    extra = ["alg.TEST_NUM_STEPS=30", "alg.MAP_NAME=2s3z"] if envname == "smax" else []  # mixed unit types
    if (alg, envname) == ("vdn", "mpe"):  # wandb offline needs no network
        extra += ["WANDB_MODE=offline", "WANDB_LOG_ALL_SEEDS=True"]
    tiny = PQN_TINY if alg == "pqn" else TINY
    r = cli(f"{alg}_ps", f"+alg={alg}_{envname}", *tiny, *extra, "NUM_SEEDS=2", "SEED=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"final greedy team return (\S+) ± (\S+) over 2 seed", r.stdout)
    assert m, r.stdout
    if envname == "mpe":
        assert float(m.group(1)) < 0
        assert "win rate" not in r.stdout
    else:
        assert "win rate" in r.stdout
    assert (tmp_path / "outputs").is_dir()  # hydra's run folder, in the caller's directory
    if "WANDB_MODE=offline" in extra:
        runs = list((tmp_path / "wandb").glob("offline-run-*"))
        assert runs and list(runs[0].glob("*.wandb")), r.stdout


@pytest.mark.timeout(300)
def test_default_alg_and_per_agent_returns_of_an_ns_module_on_a_competitive_game(tmp_path):
    r = cli("iql_ns", "alg.ENV_NAME=MPE_simple_tag_v3", *TINY, "alg.TEST_NUM_STEPS=26", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # a quiet start: what purejaxql says first, none of jaxmarl's import lines or JAX's TPU probe line
    assert r.stdout.startswith("purejaxql: no +alg given, using +alg=iql_mpe"), r.stdout[:500]
    assert "Importing submoduled" not in r.stdout + r.stderr and "backend 'tpu'" not in r.stdout + r.stderr
    assert "iql_smax" in r.stdout  # the available configs are listed
    assert re.search(r"iql_ns on MPE_simple_tag_v3: final greedy team return -?\d", r.stdout), r.stdout
    for who in ("agent adversary_0", "agent adversary_2", "agent agent_0", "team adversary"):
        assert re.search(rf"  {who}: greedy return -?\d", r.stdout), (who, r.stdout)


def resume_folders(folder):
    """Folders a RESUME can point at that hold no usable run."""
    (folder / "empty").mkdir(parents=True)
    for name in ("nockpt", "corrupt"):
        (folder / name).mkdir()
        (folder / name / "config.yaml").write_text("SEED: 0\nalg:\n  ENV_NAME: MPE_simple_spread_v3\n")
    (folder / "corrupt" / "checkpoints").mkdir()
    (folder / "corrupt" / "checkpoints" / "state_u000000004.safetensors").write_bytes(b"\0" * 64)


BAD_INPUT = [
    (["+alg=qmix_nope"], "unknown +alg=qmix_nope; available: cwqmix_mpe"),
    (["+alg=qmix_mpe", "+alg.LR_DECAY=1"], "unknown config key 'LR_DECAY'"),
    (["+alg=qmix_mpe", "alg.LR_DECY=1"], "unknown config key 'LR_DECY'"),
    (["+alg=qmix_mpe", "+FOO=1"], "unknown run key 'FOO'"),
    (["+alg=qmix_mpe", "+LR=0.1"], "LR is an algorithm key: set it as alg.LR"),
    (["+alg=qmix_mpe", "alg.ENV_NAME=MPE_simple_sprad_v3"], "close matches: ['MPE_simple_spread_v3'"),
    (["+alg=qmix_smax", "alg.MAP_NAME=99z"], "unknown SMAX MAP_NAME '99z'"),
    (["+alg=qmix_mpe", "alg.ENV_NAME=MPE_simple_facmac_v1"], "has a continuous action space"),
    (["+alg=qmix_mpe", "alg.NUM_ENVS=0"], "NUM_ENVS must be > 0, got 0"),
    (["+alg=qmix_mpe", "alg.BUFFER_SIZE=32", "alg.BUFFER_BATCH_SIZE=64"],
     "BUFFER_BATCH_SIZE (64) must not exceed BUFFER_SIZE (32)"),
    (["+alg=qmix_mpe", "alg.TOTAL_TIMESTEPS=100"], "is smaller than one rollout"),
    (["+alg=qmix_mpe", "alg.LR=-1"], "LR must be > 0"),
    (["+alg=qmix_mpe", "alg.LR=abc"], "LR must be a number, got 'abc'"),
    (["+alg=qmix_mpe", "alg.GAMMA=1.5"], "GAMMA must be in (0, 1]"),
    (["+alg=qmix_mpe", "alg.EPSILON_START=2"], "EPSILON_START must be in [0, 1]"),
    (["+alg=qmix_mpe", "NUM_SEEDS=0"], "NUM_SEEDS must be >= 1"),
    (["+alg=qmix_mpe", "SEED_BATCHING=loop"], "SEED_BATCHING must be vmap or map, got 'loop'"),
    (["+alg=qmix_mpe", "CHECKPOINT_KEEP=0"], "CHECKPOINT_KEEP must be >= 1"),
    (["+alg=qmix_mpe", "NAN_CHECK=maybe"], "NAN_CHECK must be True or False"),
    (["RESUME=missing"], "RESUME=missing: no such folder"),
    (["RESUME=empty"], "RESUME=empty: no run there"),
    (["RESUME=nockpt"], "RESUME=nockpt: the folder holds no training-state checkpoint"),
    (["RESUME=corrupt"], "is corrupt or not a purejaxql training state"),
    (["+alg=pqn_mpe", "alg.NUM_MINIBATCHES=7"], "NUM_MINIBATCHES (7) must divide NUM_ENVS * NUM_STEPS"),
    (["+alg=pqn_mpe", "+alg.BUFFER_SIZE=10"],
     "'BUFFER_SIZE' is not used by pqn (it belongs to iql/vdn/qmix/qplex/owqmix/cwqmix/qatten): pqn learns online"),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    cases = [("pqn_ps" if args[0] == "+alg=pqn_mpe" else "qmix_ps", args) for args, _ in BAD_INPUT]
    return cli_cases(cases, tmp_path_factory.mktemp("bad_input"), resume_folders)


@pytest.mark.parametrize("i", range(len(BAD_INPUT)), ids=[m[:40] for _, m in BAD_INPUT])
def test_bad_input_gives_one_clear_message(i, bad_input_results):
    r, message = bad_input_results[i], BAD_INPUT[i][1]
    assert r["code"] == 2, r["err"]
    assert message in r["err"]
    assert r["err"].count("purejaxql: error:") == 1 and "Traceback" not in r["err"]
    assert r["after"] == r["before"]  # nothing written, nothing removed


@pytest.mark.parametrize("args,message", [
    (["+alg=qmix_mpe", "alg.LR_DECY=1"], "unknown config key 'LR_DECY' for qmix_ps"),  # before hydra starts
    (["+alg=qmix_mpe", "alg.GAMMA=0"], "GAMMA must be in (0, 1], got 0.0"),  # inside hydra's main
])
def test_bad_input_exits_2_from_a_real_process(args, message, tmp_path):
    r = cli("qmix_ps", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())  # no run folder left behind


@pytest.mark.parametrize("args", [["alg.LR_DECY=1"], ["+alg=nope"], ["alg.LR=-1"], ["alg.NUM_ENVS=0"],
                                  ["NUM_SEEDS=0"], ["RESUME=no/such/folder"], ["alg.AGENT_TYPE=transformer"]])
def test_bad_input_is_reported_before_jax_and_jaxmarl_load(args, tmp_path):
    """A mistake on the command line, or a value that can be checked without the env, fails before the heavy
    libraries are imported (so in about a second rather than the 5-9 s importing them takes)."""
    code = ("import sys\nfrom purejaxql.qmix_ps import SPEC\ntry:\n    SPEC.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print('EXIT', e.code, 'jax' in sys.modules, 'jaxmarl' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, "+alg=qmix_mpe", *args] if args[0] != "+alg=nope" else
                       [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "EXIT 2 False False" in r.stdout, r.stdout + r.stderr[-2000:]
    assert r.stderr.count("purejaxql: error:") == 1 and not list(tmp_path.iterdir())


@pytest.mark.slow   # sibling in the default run: the original PQN command's EVAL_ONLY (tests/test_single_agent.py)
@pytest.mark.timeout(400)
def test_save_then_eval_only_reproduces_the_final_greedy_return(tmp_path):
    # both processes at XLA's default optimisation level: the exact reproduction holds as users run it.
    # The target sync interval (5) exceeds the run's 4 updates: the run warns once on stderr and trains on.
    tiny = [a for a in TINY if not a.startswith("alg.TARGET_UPDATE_INTERVAL=")] + ["alg.TARGET_UPDATE_INTERVAL=5"]
    r = cli("vdn_ps", "+alg=vdn_mpe", *tiny, "alg.TEST_NUM_STEPS=26", "alg.TEST_NUM_ENVS=8", "SEED=5",
            "SAVE_PATH=ck", cwd=tmp_path, default_xla_level=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("purejaxql: warning: TARGET_UPDATE_INTERVAL (5) exceeds the number of updates (4)") == 1
    trained = re.search(r"seed 0: greedy return (\S+) ± (\S+)", r.stdout)
    path = tmp_path / "ck" / "MPE_simple_spread_v3" / "vdn_ps" / "seed5_0.safetensors"
    assert trained and path.is_file() and path.with_suffix(".yaml").is_file(), r.stdout
    assert f"saved {path.relative_to(tmp_path)}" in r.stdout
    r = cli("vdn_ps", "+alg=vdn_mpe", "alg.TEST_NUM_ENVS=8", f"EVAL_ONLY={path}", cwd=tmp_path,
            default_xla_level=True)
    assert r.returncode == 0, r.stderr[-3000:]
    evaluated = re.search(r"greedy team return (\S+) ± (\S+) over 8 episodes", r.stdout)
    assert evaluated, r.stdout
    assert evaluated.groups() == trained.groups()
    assert "compiling" not in r.stdout  # no training


PREY = "pkg:checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors"


BAD_CHECKPOINT_INPUT = [
    ("vdn_ps_pretrained", ["alg.PRETRAINED_AGENTS.agent_0=missing.safetensors"], "does not exist"),
    ("vdn_ps_pretrained", ["alg.PRETRAINED_AGENTS.agent_0=junk.safetensors"], "is not a safetensors checkpoint"),
    ("vdn_ps_pretrained", ["alg.PRETRAINED_AGENTS.agent_0=spread.safetensors"],
     "pretrained parameters of 'agent_0' take observations of size 21"),
    ("vdn_ps_pretrained", [f"+alg.PRETRAINED_AGENTS.prey_0={PREY}"], "names 'prey_0', which is not an agent"),
    ("vdn_ps_pretrained", [f"+alg.PRETRAINED_AGENTS.adversary_{i}={PREY}" for i in range(3)],
     "every agent is pretrained"),
    ("vdn_ps", [f"+alg.PRETRAINED_AGENTS.agent_0={PREY}"], "only read by the *_pretrained modules"),
    ("vdn_ps", ["EVAL_ONLY=missing.safetensors"], "does not exist"),
]


def checkpoint_files(folder):
    import jax
    from purejaxql.checkpoint import save_checkpoint
    from purejaxql.networks import AgentNetwork, SharedAgents

    folder.mkdir(parents=True)
    (folder / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    spread = SharedAgents(AgentNetwork(action_dim=5, hidden_dim=8), 3, 21).init(jax.random.PRNGKey(0))
    save_checkpoint(folder / "spread.safetensors", {"agent": spread, "mixer": {}},
                    {"module": "vdn_ps", "variant": "ps", "agents": ["agent_0", "agent_1", "agent_2"]})


@pytest.fixture(scope="module")
def bad_checkpoint_results(tmp_path_factory):
    cases = [(module, ["+alg=vdn_mpe_tag_pretrained" if module.endswith("pretrained") else "+alg=vdn_mpe",
                       *TINY, *args]) for module, args, _ in BAD_CHECKPOINT_INPUT]
    return cli_cases(cases, tmp_path_factory.mktemp("bad_checkpoint"), checkpoint_files)


@pytest.mark.parametrize("i", range(len(BAD_CHECKPOINT_INPUT)), ids=[m[:40] for *_, m in BAD_CHECKPOINT_INPUT])
def test_bad_checkpoint_input_gives_one_clear_message(i, bad_checkpoint_results):
    r, message = bad_checkpoint_results[i], BAD_CHECKPOINT_INPUT[i][2]
    assert r["code"] == 2, r["err"]
    assert message in r["err"]
    assert "Traceback" not in r["err"]
    assert r["after"] == r["before"]  # nothing trained, nothing written


@pytest.mark.timeout(400)
def test_pretrained_showcase_runs_saves_and_evaluates(tmp_path):
    """PQN-VDN predators against the shipped frozen prey, from the default config; the saved PQN
    checkpoint (LayerNorm network) reproduces its final greedy return."""
    r = cli("pqn_ps_pretrained", *PQN_TINY, "alg.TEST_NUM_STEPS=26", "alg.TEST_NUM_ENVS=8", "SAVE_PATH=ck",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "using +alg=pqn_mpe_tag_pretrained" in r.stdout
    assert "pqn_ps_pretrained on MPE_simple_tag_v3" in r.stdout
    assert re.search(r"  agent agent_0: greedy return -?\d", r.stdout)  # the frozen prey, logged apart
    trained = re.search(r"seed 0: greedy return (\S+) ± (\S+)", r.stdout)
    path = tmp_path / "ck" / "MPE_simple_tag_v3" / "pqn_ps_pretrained" / "seed0_0.safetensors"
    assert trained and path.is_file(), r.stdout
    r = cli("pqn_ps_pretrained", "alg.TEST_NUM_ENVS=8", f"EVAL_ONLY={path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    evaluated = re.search(r"greedy team return (\S+) ± (\S+) over 8 episodes", r.stdout)
    assert evaluated and evaluated.groups() == trained.groups(), r.stdout
