"""A non-editable install carries the hydra configs: the CLI works from any directory."""
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(300)
def test_wheel_ships_configs_and_cli_runs_from_elsewhere(tmp_path):
    # offline: no build isolation (the build backend is the setuptools the test extra installs), no index
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(tmp_path), ROOT], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    wheel = next(tmp_path.glob("purejaxql-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    metadata = zipfile.ZipFile(wheel).read("purejaxql-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.11" in metadata
    assert "purejaxql-0.1.0.dist-info/licenses/LICENSE" in names
    for alg in ("iql", "vdn", "qmix"):
        for env in ("mpe", "smax"):
            assert f"purejaxql/conf/alg/{alg}_{env}.yaml" in names
    assert "purejaxql/conf/config.yaml" in names
    for alg in ("iql", "vdn", "qmix"):
        assert f"purejaxql/conf/alg/{alg}_mpe_tag_pretrained.yaml" in names
    # the bases the alg configs start from (hydra defaults lists): without them no alg config composes
    bases = sorted(os.listdir(os.path.join(ROOT, "config", "alg", "base")))
    assert {"ql.yaml", "ql_mpe.yaml", "ql_smax.yaml"} <= set(bases)
    for name in bases:
        if name.endswith(".yaml"):
            assert f"purejaxql/conf/alg/base/{name}" in names
    assert "purejaxql/checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors" in names  # the showcase's prey
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-c", "import purejaxql; print(purejaxql.__file__)"], cwd=elsewhere,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith(str(target)), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "purejaxql.qmix_ps", "+alg=qmix_smax", "alg.MAP_NAME=2s3z",
                        "--cfg", "job"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MAP_NAME: 2s3z" in r.stdout and "MIXER_EMBEDDING_DIM" in r.stdout
    assert "BUFFER_SIZE: 5000" in r.stdout and "NUM_EPOCHS: 8" in r.stdout  # from base/ql.yaml, base/ql_smax.yaml
