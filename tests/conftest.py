import os
import sys

# Every test has a timeout (pyproject: timeout = 600 s); print all thread stacks if one stalls.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")
# The suite's programs are tiny, so XLA's compile time dominates it: compiling with LLVM's optimisation
# level 0 halves that (the foundation suite went from ~14 to ~6 minutes on 2 cores). It changes how fast the
# generated code runs, not what it computes; benchmarks and user runs keep the default level.
# Set before JAX starts, and inherited by the CLI subprocesses the tests launch.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
sys.path.insert(0, os.path.dirname(__file__))  # for tests/envs.py
