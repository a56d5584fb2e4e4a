"""bench/suite.py, the one-command benchmark suite, at its tiny size: it runs, and its table says what it measured."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(400)
def test_suite_runs_at_tiny_size_and_prints_one_row_per_measurement(tmp_path):
    out = tmp_path / "suite.jsonl"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "suite.py"), "--size", "tiny", "--workloads",
                        "pqn_cartpole", "--seeds", "1", "2", "--timeout", "300", "--json", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=380)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("purejaxql benchmark suite, --size tiny, on cpu")
    assert lines[1].startswith("| workload | seeds | env steps/s (all seeds) | compile s | peak memory |")
    table = [x for x in lines[3:] if x.startswith("| pqn_cartpole |")]
    assert [x.split("|")[2].strip() for x in table] == ["1", "2"]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seeds"] for x in rows] == [1, 2]
    for x in rows:
        assert x["steps_per_s"] > 0 and x["compile_s"] > 0 and x["peak_memory_bytes"] > 2 ** 20
        assert x["memory_kind"] == "RSS" and x["timesteps"] > 0
        assert x["final_return"] is not None and x["final_return"] == x["final_return"]  # finite, not NaN
    assert "failed" not in r.stdout


def test_suite_reports_a_failed_measurement_and_exits_non_zero(tmp_path):
    """A measurement that cannot finish (here: a 0.01 s timeout) is a row saying so, and the exit is non-zero."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "suite.py"), "--size", "tiny", "--workloads",
                        "pqn_cartpole", "--seeds", "1", "--timeout", "0.01"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "| pqn_cartpole | 1 | failed: timed out after 0.01 s |" in r.stdout
    assert "1 measurement(s) failed" in r.stderr
