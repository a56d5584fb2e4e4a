"""Bit-identity at XLA's default optimisation level (the suite itself compiles at level 0, see conftest.py):
the CLI's chunked run equals one jitted program, and the same seed gives the same bits in two separate
processes. Two fresh processes run tests/determinism_programs.py side by side; the second trains only
the one-program versions (each compile at the default level costs 20-30 CPU seconds)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent / "determinism_programs.py"


def default_level_env():
    """This process's environment without conftest's --xla_backend_optimization_level=0."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_backend_optimization_level" not in f]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def differences(pairs):
    """``(name, a, b)`` -> the names whose arrays differ in any bit, with the largest difference."""
    out = []
    for name, a, b in pairs:
        if a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
        elif a.tobytes() != b.tobytes():
            bits = [np.frombuffer(x.tobytes(), np.uint8).reshape(a.size, -1) for x in (a, b)]
            gap = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0)
            out.append(f"{name} ({(bits[0] != bits[1]).any(1).sum()} of {a.size} differ, largest gap {gap:g})")
    return out


def run_two_processes(folder):
    """The driver in two fresh processes at once, at XLA's default optimisation level."""
    runs = [(folder / "process1.npz", []), (folder / "process2.npz", ["--one-program-only"])]
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(path), *flags], env=default_level_env(),
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path, flags in runs]
    for proc in procs:
        out, err = proc.communicate(timeout=500)
        assert proc.returncode == 0, (out + err)[-3000:]
    return [dict(np.load(path)) for path, _ in runs]


# one test, not two: under pytest-xdist two tests could land on two workers, each starting its own pair.
# slow (~2 min, both cores): the default run checks chunked = one program at the suite's optimisation level
# (tests/test_train.py) and that reruns are bit-identical across processes (tests/test_resume.py)
@pytest.mark.slow
@pytest.mark.timeout(540)
def test_chunked_run_equals_one_program_and_two_processes_agree_at_the_default_optimisation_level(tmp_path):
    first, second = run_two_processes(tmp_path)
    for data in (first, second):
        assert "xla_backend_optimization_level" not in str(data["XLA_FLAGS"])
    for alg in ("qmix", "pqn"):
        one = sorted(k for k in first if k.startswith(f"{alg}/one/"))
        assert len(one) > 10 and any("/params" in k for k in one)  # every metric and the final parameters
        assert np.isfinite(first[f"{alg}/one/loss"][1:]).all() and first[f"{alg}/one/grad_steps"][-1] > 0
        # the CLI's way, chunk by chunk, against one program: every metric and parameter, bit for bit
        assert {k.replace("/one/", "/chunked/") for k in one} == {k for k in first if f"{alg}/chunked/" in k}
        bad = differences((k, first[k], first[k.replace("/one/", "/chunked/")]) for k in one)
        assert not bad, f"{alg}: chunked run != one program: {bad}"
        # the same seed in another process
        assert one == sorted(k for k in second if k.startswith(f"{alg}/"))
        bad = differences((k, first[k], second[k]) for k in one)
        assert not bad, f"{alg}: process 1 != process 2: {bad}"
