import os
import sys

# Every test has a timeout (pyproject: timeout = 600 s); print all thread stacks if one stalls.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")
sys.path.insert(0, os.path.dirname(__file__))  # for tests/envs.py
