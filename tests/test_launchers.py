"""The cluster launcher presets in config/hydra/launcher compose, and the Slurm ones turn into a valid sbatch
script, without submitting anything (no Slurm or Ray is needed)."""
import os
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate

LAUNCHER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "hydra", "launcher")
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# what each preset sets on top of the plugin's defaults
SLURM_PRESETS = {
    "slurm_gpu": {"name": "purejaxql", "gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 32, "timeout_min": 60,
                  "array_parallelism": 16, "max_num_timeout": 0,
                  "setup": ["export XLA_PYTHON_CLIENT_PREALLOCATE=false"]},
    "slurm_cpu": {"name": "purejaxql", "gpus_per_node": None, "cpus_per_task": 8, "mem_gb": 16, "timeout_min": 120,
                  "array_parallelism": 64, "max_num_timeout": 0, "setup": ["export JAX_PLATFORMS=cpu"]},
}


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="purejaxql.conf", version_base="1.3"):
        return compose(config_name="config", overrides=["+alg=qmix_mpe", *overrides], return_hydra_config=True)


def test_presets_ship_in_the_config_package():
    from importlib.resources import files
    names = {p.name for p in files("purejaxql.conf.hydra.launcher").iterdir()}
    assert {"slurm_cpu.yaml", "slurm_gpu.yaml", "ray_local.yaml", "ray_cluster.yaml"} <= names


@pytest.mark.parametrize("preset", sorted(SLURM_PRESETS))
def test_slurm_preset_composes(preset):
    cfg = _compose([f"hydra/launcher={preset}", "hydra.launcher.partition=gpu_short"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_TARGET
    for key, value in SLURM_PRESETS[preset].items():
        assert launcher[key] == value, key
    assert launcher.partition == "gpu_short"  # command-line override
    assert launcher.signal_delay_s == 120  # a plugin default the presets leave alone
    assert cfg.alg.LR == 0.005  # the training config is untouched
    cls = get_class(launcher._target_)
    from hydra.plugins.launcher import Launcher
    assert issubclass(cls, Launcher)


@pytest.mark.parametrize("preset", sorted(SLURM_PRESETS))
def test_slurm_preset_makes_a_valid_sbatch_script(preset, tmp_path, monkeypatch):
    """Runs the launcher's own launch() up to the point of submission: submitit checks every parameter and the
    sbatch script is rendered from what it would submit."""
    import submitit
    from hydra.core.utils import setup_globals
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun needed here
    captured = {}

    def fake_map_array(executor, fn, *args):  # stands in for the submission: nothing reaches sbatch
        captured["executor"], captured["args"] = executor, args
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    setup_globals()
    cfg = _compose([f"hydra/launcher={preset}", "hydra.launcher.partition=gpu_short",
                    f"hydra.sweep.dir={tmp_path / 'multirun'}"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["alg.LR=0.001"], ["alg.LR=0.0005"]], initial_job_idx=0) == []
    assert [list(o) for o in captured["args"][0]] == [["alg.LR=0.001"], ["alg.LR=0.0005"]]
    executor = captured["executor"]
    assert executor._executor.max_num_timeout == 0
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit X", "uid")
    want = SLURM_PRESETS[preset]
    assert "#SBATCH --partition=gpu_short" in script
    assert "#SBATCH --job-name=purejaxql" in script
    assert f"#SBATCH --cpus-per-task={want['cpus_per_task']}" in script
    assert f"#SBATCH --mem={want['mem_gb']}GB" in script
    assert f"#SBATCH --time={want['timeout_min']}" in script
    assert ("#SBATCH --gpus-per-node=1" in script) == (want["gpus_per_node"] == 1)
    assert want["setup"][0] in script
    assert str(tmp_path / "multirun" / ".submitit") in script


def test_cli_accepts_the_launcher_group(tmp_path):
    r = subprocess.run([sys.executable, "-m", "purejaxql.qmix_ps", "+alg=qmix_mpe", "hydra/launcher=slurm_gpu",
                        "hydra.launcher.timeout_min=30", "--cfg", "hydra", "-p", "hydra.launcher"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert SLURM_TARGET in r.stdout and "timeout_min: 30" in r.stdout and "gpus_per_node: 1" in r.stdout


@pytest.mark.parametrize("preset,address", [("ray_local", None), ("ray_cluster", "auto")])
def test_ray_preset_files(preset, address):
    """Checked as plain YAML here (the Ray plugin is an optional extra, not in the test extra)."""
    with open(os.path.join(LAUNCHER_DIR, f"{preset}.yaml")) as f:
        raw = yaml.safe_load(f)
    assert raw["defaults"] == ["ray"]
    assert raw["ray"]["init"]["address"] == address
    assert {"num_cpus", "num_gpus", "max_calls"} <= set(raw["ray"]["remote"])
