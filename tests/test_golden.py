"""Results unchanged by a refactor: short fixed runs of every algorithm and variant give, bit for bit, the
metrics and final-parameter checksum kept in tests/golden/golden_metrics.npz (see tests/golden_runs.py).
Slow (14 programs); run it before and after reshaping code: ``python -m pytest -m slow tests/test_golden.py``."""
import pytest

import golden_runs


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(golden_runs.runs()))
def test_golden_run_is_unchanged(name):
    golden, env = golden_runs.load()
    if env != golden_runs.environment():
        pytest.skip(f"golden file written with {env}; bit-identity is only expected on the same set-up")
    mine = {k: v for k, v in golden.items() if k.startswith(name + "/")}
    assert mine, f"{name} is not in the golden file"
    module, config, prey = golden_runs.runs()[name]
    now = {f"{name}/{k}": v for k, v in golden_runs.one_run(module, config, prey).items()}
    assert not golden_runs.differences(mine, now)
