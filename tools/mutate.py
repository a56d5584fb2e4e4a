#!/usr/bin/env python
"""Mutation testing of purejaxql's core modules against chosen fast tests.

The script copies the repository (without .git, .venv and caches) to a work folder, then, one mutant at a
time, writes a single small change into one source file of the copy, runs that file's fast tests there
(``pytest -n 0 -x``, stopping at the first failure) with a timeout, records the outcome and restores the
file. The repository itself is never written to. ``import purejaxql`` in every test process resolves to the
copy (PYTHONPATH puts it first; a tiny pytest plugin stops the run with exit code 99 if it does not).

Mutants are made from the AST and spliced into the source text, so only the mutated characters change:

    arith       + <-> -, * <-> /, // -> /, ** -> *   (also in augmented assignments)
    neg         -x -> x
    compare     < <-> <=, > <-> >=, == <-> !=, is <-> is not, in <-> not in
    bool        and <-> or, & <-> |, not x -> x, ~x -> x, True <-> False
    number      0 <-> 1, n -> n + 1 (ints and floats)
    slice       [1:] <-> [:-1], [a:] <-> [:a]
    swap_args   two adjacent positional arguments of the same kind swapped
    where       jnp.where(c, a, b) -> jnp.where(c, b, a)
    stop_grad   jax.lax.stop_gradient(x) -> x
    max_min     max <-> min, maximum <-> minimum
    argmax      argmax <-> argmin
    axis        axis=/in_axes=/out_axes= n -> another axis
    sum_mean    sum <-> mean

Docstrings, strings, f-strings, type annotations, ``__all__``, decorators, ``chex`` asserts, ``assert`` and
``raise`` statements (error messages) are never mutated. Mutants equal to the original, or to another
mutant, are dropped.

Usage (from the repository root, with the project's venv):

    python tools/mutate.py --list                                   # count the candidates per file
    python tools/mutate.py --max-mutants 64 --seed 0 --report mut.tsv
    python tools/mutate.py --same-as mut.tsv --report mut_after.tsv # exactly the mutants of an old report
    python tools/mutate.py --same-as mut.tsv --only survived --report surv.tsv   # only its survivors
    python tools/mutate.py --rev OLD --max-mutants 64 --plan-only --report plan.tsv  # choose, run nothing
    python tools/mutate.py --same-as mut.tsv --only ID --tests "tests/test_x.py::test_y" --report x.tsv

``--rev REV`` mutates a committed revision (``git archive``) instead of the working tree. ``--same-as``
finds each earlier mutant again by file, operator and original -> mutated text, so edits elsewhere in a
file (moved lines) do not lose it; mutants whose code is gone are reported as ``missing``.
``--exclude OLD.tsv`` samples new mutants only, to extend a campaign; ``--summary-only`` rewrites the
``.md`` of a (joined) TSV. Each mutant's test process gets a persistent JAX compilation cache in the work
folder, so programs a mutant leaves unchanged are not compiled again.

The report is a TSV (one row per mutant, written as each finishes) plus ``<report>.md``, a summary.
A mutant is *killed* when its tests fail (or cannot even be collected), *survived* when they pass, and
*timeout* when they run past the limit (``--timeout-factor`` times the unmutated run, plus 60 s).
"""
from __future__ import annotations

import argparse
import ast
import csv
import difflib
import hashlib
import io
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent

# Which fast tests exercise each file, ordered so that the quickest, most direct checks come first
# (with -x the first failure ends the run). ``quota``: the file's share of --max-mutants. Test files or
# test functions that the copied revision does not have are left out (and named in the log), so one map
# serves older revisions too.
MATH_K = ("not rnn and not shared_agents and not monotonic and not mixer_matches and not layer_norm and "
          "not batch_norm and not network_of and not config")
TARGETS: Dict[str, dict] = {
    "rl_math.py": dict(quota=12, tests=["tests/test_math.py", "tests/test_pqn_math.py", "-k", MATH_K]),
    "q_learning.py": dict(quota=11, tests=[
        "tests/test_replay_loop.py",
        "tests/test_alignment.py::test_stored_steps_follow_the_episodes",
        "tests/test_alignment.py::test_stored_hidden_state_is_the_actor_state",
        "tests/test_two_step.py::test_qmix_finds_the_optimal_joint_action",
        "tests/test_train.py::test_notebook_usage_and_output_contract",
        "tests/test_frozen_agents.py::test_frozen_agent_acts_greedily_in_the_training_rollout[vdn]"]),
    "decomposition.py": dict(quota=8, tests=[
        *[f"tests/test_math.py::test_{t}" for t in (
            "double_q_td_error_matches_python_loop", "double_q_bootstrap_matches_python_loop",
            "bootstrap_never_picks_unavailable_action", "td_error_does_not_differentiate_through_target",
            "vdn_loss_matches_numpy", "qmix_loss_matches_numpy", "iql_loss_matches_numpy")],
        "tests/test_replay_loop.py", "tests/test_two_step.py::test_qmix_finds_the_optimal_joint_action"]),
    "pqn.py": dict(quota=12, tests=[
        "tests/test_pqn.py::test_q_lambda_targets_match_a_plain_loop",
        "tests/test_pqn.py::test_learning_stage_matches_a_reference",
        "tests/test_pqn.py::test_an_update_reports_the_loss_and_q_values_of_its_learning_stage",
        "tests/test_pqn.py::test_learner_replays_exactly_what_the_actor_saw",
        "tests/test_pqn.py::test_pqn_ps_independent_learners_on_agents_of_different_shapes",
        "tests/test_frozen_agents.py::test_frozen_agent_acts_greedily_in_the_training_rollout[pqn]"]),
    "loop.py": dict(quota=9, tests=[
        "tests/test_bookkeeping.py",
        "tests/test_frozen_agents.py::test_frozen_agent_acts_greedily_in_the_training_rollout[vdn]",
        "tests/test_train.py::test_notebook_usage_and_output_contract",
        "tests/test_pqn.py::test_pqn_ps_pretrained_trains_beside_a_frozen_prey"]),
    "evaluation.py": dict(quota=10, tests=[
        "tests/test_bookkeeping.py",
        "tests/test_variants.py::test_teams_and_per_agent_metrics",
        "tests/test_alignment.py::test_stored_steps_follow_the_episodes",
        "tests/test_train.py::test_notebook_usage_and_output_contract",
        "tests/test_pqn.py::test_pqn_ps_independent_learners_on_agents_of_different_shapes"]),
    "environments.py": dict(quota=10, tests=["tests/test_wrapper.py", "tests/test_bookkeeping.py",
                                             "tests/test_defaults.py::test_time_outs_follow_the_env_unless_set"]),
}

# Functions never mutated (host-side printing only).
SKIP_FUNCTIONS = {"debug_print"}
# Calls whose arguments are never mutated (shape checks) and calls whose positional arguments are not
# swapped (symmetric ones, where the swap is equivalent by construction).
NO_MUTATE_CALLS = {"chex"}
NO_SWAP_FUNCS = {"swapaxes", "where", "maximum", "minimum", "split", "fold_in", "PRNGKey", "isinstance",
                 "hasattr", "getattr", "setdefault", "zip", "enumerate", "range", "partial", "dict", "get",
                 "scan", "callback", "take_along_axis", "take", "concatenate", "Program", "build",
                 "make_greedy_eval", "resolve_config"}
# Sampling weights: operators that change the math are preferred over constants and argument swaps (which
# mostly break shapes and fail at trace time); mutants inside jax.random.* calls are down-weighted again.
OPERATOR_WEIGHT = {"number": 0.45, "swap_args": 0.3}
COMMUTATIVE = (ast.Add, ast.Mult, ast.BitAnd, ast.BitOr)

COLUMNS = ["id", "file", "line", "col", "operator", "original", "mutated", "line_text", "outcome", "seconds",
           "first_failure"]


# --------------------------------------------------------------------------------------------------------
# mutants
# --------------------------------------------------------------------------------------------------------
@dataclass
class Mutant:
    file: str                      # path relative to purejaxql/
    line: int
    col: int                       # column (characters) in the line, of the mutated node
    operator: str
    original: str                  # the mutated node's source, one line
    mutated: str                   # ... and after the change
    line_text: str                 # the (first) source line of the node, stripped
    edits: List[Tuple[int, int, bytes]] = field(default_factory=list, repr=False)  # byte offsets
    weight: float = 1.0

    @property
    def ident(self) -> str:
        return f"{self.file}:{self.line}:{self.col}:{self.operator}:{short_hash(self.mutated)}"

    def apply(self, source: bytes) -> bytes:
        out = source
        for start, end, text in sorted(self.edits, reverse=True):
            out = out[:start] + text + out[end:]
        return out


def short_hash(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()[:6]


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(part.strip() for part in text.splitlines())
    text = text.replace("\t", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Source:
    """A file's text with conversions between AST positions (line, UTF-8 byte column) and byte offsets."""

    def __init__(self, data: bytes):
        self.data = data
        self.line_starts = [0]
        for i, b in enumerate(data):
            if b == 0x0A:
                self.line_starts.append(i + 1)

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def start(self, node) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def text(self, a: int, b: int) -> str:
        return self.data[a:b].decode()

    def segment(self, node) -> str:
        return self.text(self.start(node), self.end(node))

    def line(self, line: int) -> str:
        a = self.line_starts[line - 1]
        b = self.line_starts[line] if line < len(self.line_starts) else len(self.data)
        return self.data[a:b].decode().rstrip("\n")

    def char_col(self, node) -> int:
        a = self.line_starts[node.lineno - 1]
        return len(self.data[a:a + node.col_offset].decode())


BINOP_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
                ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.MatMult: "@"}
ARITH_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
              ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
CMP_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
              ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
NAME_SWAPS = {"max_min": {"max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum"},
              "argmax": {"argmax": "argmin", "argmin": "argmax"},
              "sum_mean": {"sum": "mean", "mean": "sum"}}


def func_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def root_name(node) -> str:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def int_value(node) -> Optional[int]:
    """The value of an int literal, or of -<int literal>."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int):
        return -node.operand.value
    return None


def excluded_nodes(tree: ast.AST) -> set:
    """ids of nodes under which nothing is mutated."""
    skip = set()

    def mark(node):
        for n in ast.walk(node):
            skip.add(id(n))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assert, ast.Raise, ast.JoinedStr, ast.Import, ast.ImportFrom)):
            mark(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            mark(node)                                    # docstrings
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name in SKIP_FUNCTIONS:
                mark(node)
            for d in node.decorator_list:
                mark(d)
            if node.returns is not None:
                mark(node.returns)
            for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                if a.annotation is not None:
                    mark(a.annotation)
        elif isinstance(node, ast.ClassDef):
            for d in node.decorator_list:
                mark(d)
            for stmt in node.body:                        # NamedTuple / dataclass field declarations
                if isinstance(stmt, ast.AnnAssign):
                    mark(stmt)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            mark(node)
        elif isinstance(node, ast.Call) and root_name(node.func) in NO_MUTATE_CALLS:
            mark(node)
    return skip


def in_function(tree: ast.AST) -> set:
    """ids of nodes inside a function body (module-level constants and class bodies are left alone)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            body = node.body if isinstance(node.body, list) else [node.body]
            for stmt in body:
                for n in ast.walk(stmt):
                    inside.add(id(n))
            for d in node.args.defaults + node.args.kw_defaults:
                if d is not None:
                    for n in ast.walk(d):
                        inside.add(id(n))
    return inside


def gap_edit(src: Source, a: int, b: int, old: str, new: str) -> Optional[Tuple[int, int, bytes]]:
    """Replace the operator ``old`` found (as a token) in the text between offsets a and b by ``new``."""
    gap = src.text(a, b)
    pattern = r"(?<![=<>!*/])" + re.escape(old) + r"(?![=*/])" if old not in ("is", "in", "and", "or", "not in",
                                                                                "is not") else r"\b" + re.escape(old) + r"\b"
    m = list(re.finditer(pattern, gap))
    if len(m) != 1:
        return None
    start = a + len(gap[:m[0].start()].encode())
    return (start, start + len(old.encode()), new.encode())


def node_edit(src: Source, node, new_text: str) -> Tuple[int, int, bytes]:
    return (src.start(node), src.end(node), new_text.encode())


def candidates(path: Path, rel: str) -> List[Mutant]:
    data = path.read_bytes()
    src = Source(data)
    tree = ast.parse(data)
    skip, inside = excluded_nodes(tree), in_function(tree)
    parents = {}
    for p in ast.walk(tree):
        for c in ast.iter_child_nodes(p):
            parents[id(c)] = p
    out: List[Mutant] = []

    local_functions = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def add(node, op, edits, weight=1.0):
        edits = [e for e in edits if e is not None]
        if not edits:
            return
        weight *= OPERATOR_WEIGHT.get(op, 1.0)
        shown = node                                     # what the report shows: at least a few characters
        while len(src.segment(shown)) < 12 and isinstance(parents.get(id(shown)), (ast.expr, ast.keyword)) \
                and hasattr(parents[id(shown)], "lineno"):
            shown = parents[id(shown)]
        if not (src.start(shown) <= min(e[0] for e in edits) and max(e[1] for e in edits) <= src.end(shown)):
            shown = node
        node = shown
        a, b = src.start(node), src.end(node)
        local = Mutant(rel, 0, 0, op, "", "", "", [(s - a, e - a, t) for s, e, t in edits])
        original = src.text(a, b)
        mutated = local.apply(original.encode()).decode()
        out.append(Mutant(rel, node.lineno, src.char_col(node), op, one_line(original), one_line(mutated),
                          src.line(node.lineno).strip(), edits, weight))

    for node in ast.walk(tree):
        if id(node) in skip or id(node) not in inside or not hasattr(node, "lineno"):
            continue
        weight = 0.3 if _key_plumbing(node, parents) else 1.0
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            is_seq = _sequence_like(node)
            a, b = src.end(node.left), src.start(node.right)
            if op in ARITH_SWAP and not is_seq:
                add(node, "arith", [gap_edit(src, a, b, BINOP_SYMBOL[op], BINOP_SYMBOL[ARITH_SWAP[op]])], weight)
            elif op in (ast.BitAnd, ast.BitOr):
                new = "|" if op is ast.BitAnd else "&"
                add(node, "bool", [gap_edit(src, a, b, BINOP_SYMBOL[op], new)], weight)
        elif isinstance(node, ast.AugAssign) and type(node.op) in ARITH_SWAP and not isinstance(
                node.value, (ast.List, ast.ListComp, ast.Tuple, ast.Call)):
            op = type(node.op)
            a, b = src.end(node.target), src.start(node.value)
            add(node, "arith", [gap_edit(src, a, b, BINOP_SYMBOL[op] + "=", BINOP_SYMBOL[ARITH_SWAP[op]] + "=")],
                weight)
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
                add(node, "neg", [node_edit(src, node, src.segment(node.operand))], weight)
            elif isinstance(node.op, ast.Not):
                add(node, "bool", [node_edit(src, node, src.segment(node.operand))], weight)
            elif isinstance(node.op, ast.Invert):
                add(node, "bool", [node_edit(src, node, src.segment(node.operand))], weight)
        elif isinstance(node, ast.Compare):
            left = node.left
            for cop, right in zip(node.ops, node.comparators):
                t = type(cop)
                add(node, "compare", [gap_edit(src, src.end(left), src.start(right), CMP_SYMBOL[t],
                                               CMP_SYMBOL[CMP_SWAP[t]])], weight)
                left = right
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for left, right in zip(node.values, node.values[1:]):
                add(node, "bool", [gap_edit(src, src.end(left), src.start(right), old, new)], weight)
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            add(node, "bool", [node_edit(src, node, str(not node.value))], weight)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            parent = parents.get(id(node))
            if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub):
                target, value = parent, -node.value
            else:
                target, value = node, node.value
            if isinstance(parent, ast.keyword) and parent.arg in ("axis", "in_axes", "out_axes"):
                continue                                  # the axis operator covers these
            new = {0: 1, 1: 0}.get(value, value + 1)
            new = type(value)(new)
            add(target, "number", [node_edit(src, target, repr(new))], weight)
        elif isinstance(node, ast.Slice):
            lo, up = node.lower, node.upper
            if node.step is not None:
                continue
            if lo is not None and up is None:
                text = ":-1" if int_value(lo) == 1 else ":" + src.segment(lo)
            elif lo is None and up is not None:
                text = "1:" if int_value(up) == -1 else src.segment(up) + ":"
            else:
                continue
            add(node, "slice", [node_edit(src, node, text)], weight)
        elif isinstance(node, ast.Call):
            name = func_name(node)
            args = node.args
            if any(isinstance(a, ast.Starred) for a in args):
                continue
            if name == "where" and len(args) == 3:
                add(node, "where", [node_edit(src, args[1], src.segment(args[2])),
                                    node_edit(src, args[2], src.segment(args[1]))], weight)
            elif name == "stop_gradient" and len(args) == 1:
                add(node, "stop_grad", [node_edit(src, node, src.segment(args[0]))], weight)
            elif name not in NO_SWAP_FUNCS:
                for x, y in zip(args, args[1:]):
                    if isinstance(x, ast.Constant) or any(isinstance(z, ast.Name) and z.id in local_functions
                                                          for z in (x, y)):
                        continue
                    if type(x) is type(y) and src.segment(x) != src.segment(y):
                        add(node, "swap_args", [node_edit(src, x, src.segment(y)), node_edit(src, y, src.segment(x))],
                            weight)
            for op, table in NAME_SWAPS.items():
                if name in table:
                    f = node.func
                    if isinstance(f, ast.Attribute):
                        a = src.end(f.value)
                        b = src.end(f)
                        gap = src.text(a, b)
                        i = gap.rfind(name)
                        start = a + len(gap[:i].encode())
                        add(node, op, [(start, start + len(name), table[name].encode())], weight)
                    elif isinstance(f, ast.Name):
                        add(node, op, [node_edit(src, f, table[name])], weight)
            for kw in node.keywords:
                if kw.arg in ("axis", "in_axes", "out_axes"):
                    v = int_value(kw.value)
                    if v is None:
                        continue
                    new = {0: 1, 1: 0, -1: -2}.get(v, v - 1 if v > 1 else v + 1)
                    add(node, "axis", [node_edit(src, kw.value, str(new))], weight)

    # drop no-ops, mutants that do not compile, and duplicates (same mutated file)
    seen, kept = {hashlib.sha1(data).hexdigest()}, []
    original_dump = ast.dump(tree)
    for m in out:
        new = m.apply(data)
        h = hashlib.sha1(new).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        try:
            if ast.dump(ast.parse(new)) == original_dump:
                continue
            compile(new, rel, "exec")
        except SyntaxError:
            continue
        kept.append(m)
    kept.sort(key=lambda m: (m.line, m.col, m.operator, m.mutated))
    return kept


def _sequence_like(node) -> bool:
    """A BinOp on tuples, lists, strings or shapes (``+``/``*`` there build sequences: mutants only crash)."""
    for x in (node.left, node.right):
        if isinstance(x, (ast.Tuple, ast.List, ast.JoinedStr)) or (isinstance(x, ast.Constant) and isinstance(x.value, str)):
            return True
        if isinstance(x, ast.Attribute) and x.attr == "shape":
            return True
        if isinstance(x, ast.Subscript) and isinstance(x.value, ast.Attribute) and x.value.attr == "shape":
            return True
        if isinstance(x, ast.BinOp) and _sequence_like(x):
            return True
    return False


def _key_plumbing(node, parents) -> bool:
    """Inside jax.random.* calls: the mutants there mostly change which random numbers are drawn."""
    p = node
    while id(p) in parents:
        p = parents[id(p)]
        if isinstance(p, ast.Call) and isinstance(p.func, ast.Attribute) and isinstance(p.func.value, ast.Attribute) \
                and p.func.value.attr == "random":
            return True
        if isinstance(p, ast.stmt):
            return False
    return False


def sample(pool: Dict[str, List[Mutant]], quotas: Dict[str, int], seed: int) -> List[Mutant]:
    """A weighted sample without replacement per file (fixed seed), files interleaved round-robin."""
    rng = random.Random(seed)
    per_file = []
    for rel, ms in pool.items():
        keyed = sorted(ms, key=lambda m: -math.log(rng.random() or 1e-300) / m.weight)  # Efraimidis-Spirakis
        chosen = keyed[:quotas.get(rel, len(ms))]
        chosen.sort(key=lambda m: (m.line, m.col))
        rng.shuffle(chosen)
        per_file.append(chosen)
    order = []
    for i in range(max((len(c) for c in per_file), default=0)):
        order += [c[i] for c in per_file if i < len(c)]
    return order


def read_report(path: Path) -> List[dict]:
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f, delimiter="\t")]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def match_previous(rows: List[dict], pool: Dict[str, List[Mutant]]) -> Tuple[List[Mutant], List[dict]]:
    """The mutants of an earlier report, found again in the current sources: same file, operator and
    original -> mutated text (whitespace aside); among several, the one on the most similar source line,
    then the nearest line number. Rows not found come back in ``missing``."""
    found, missing = [], []
    for row in rows:
        if row.get("outcome") == "missing":
            missing.append(row)
            continue
        want = (row["operator"], _squash(row["original"]), _squash(row["mutated"]))
        same = [m for m in pool.get(row["file"], [])
                if (m.operator, _squash(m.original), _squash(m.mutated)) == want]
        if not same:
            missing.append(row)
            continue
        line_text, col, line = _squash(row["line_text"]), int(row["col"]), int(row["line"])
        found.append(min(same, key=lambda m: (
            -(difflib.SequenceMatcher(None, _squash(m.line_text), line_text).ratio() if _squash(m.line_text) != line_text
              else 2.0), abs(m.col - col), abs(m.line - line))))
    return found, missing


# --------------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------------
GUARD = '''
import os, sys
import pytest

def pytest_collection_finish(session):
    mod = sys.modules.get("purejaxql")
    root = os.environ["MUTATE_ROOT"]
    if mod is None:
        import purejaxql as mod
    if not os.path.realpath(mod.__file__).startswith(os.path.realpath(root) + os.sep):
        sys.stderr.write(f"mutate guard: purejaxql imported from {mod.__file__}, not from {root}\\n")
        pytest.exit("purejaxql not imported from the mutation copy", returncode=99)
'''


def make_copy(repo: Path, work: Path, rev: Optional[str] = None) -> Path:
    """Copy the working tree (or, with ``rev``, the files of that git revision) to ``work/repo``."""
    root = work / "repo"
    if root.exists():
        shutil.rmtree(root)
    if rev is not None:
        root.mkdir(parents=True)
        tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            try:
                t.extractall(root, filter="data")
            except TypeError:                          # Python < 3.10.12 / 3.11.4: no extraction filters
                t.extractall(root)
    else:
        _copy_tree(repo, root)
    guard = work / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "mutate_guard.py").write_text(GUARD)
    return root


def _copy_tree(repo: Path, root: Path):
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "*.egg-info", "outputs",
                                    "multirun", "wandb", "models", "build", "dist")
    shutil.copytree(repo, root, ignore=ignore, symlinks=True)


def test_env(root: Path, work: Path, jax_cache: Optional[Path]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(work / "guard")] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["MUTATE_ROOT"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"        # no stale .pyc of a mutant can ever be picked up
    if jax_cache is not None:                   # programs a mutant leaves unchanged compile once
        env["JAX_COMPILATION_CACHE_DIR"] = str(jax_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def existing_tests(root: Path, tests: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split pytest arguments into those the copy has and the test paths / functions it lacks."""
    keep, gone = [], []
    for arg in tests:
        path, _, name = arg.partition("::")
        if not path.startswith("tests/"):
            keep.append(arg)
            continue
        f = root / path
        func = name.split("[")[0]
        if not f.is_file() or (func and not re.search(rf"^\s*def {re.escape(func)}\(", f.read_text(), re.M)):
            gone.append(arg)
        else:
            keep.append(arg)
    return keep, gone


def run_tests(root: Path, env: dict, tests: Sequence[str], timeout: float) -> Tuple[str, float, str, str]:
    """-> (outcome, seconds, first failing test, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-p", "no:cacheprovider", "-p", "mutate_guard",
           "-o", f"timeout={int(timeout) + 30}", *tests]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # the test process and any process it started
        out, _ = proc.communicate()
        rc = None
    secs = time.monotonic() - t0
    text = out.decode(errors="replace")
    first = ""
    for line in text.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            first = line.split(" - ")[0].split(" ", 1)[1]
            break
    if rc is None:
        outcome = "timeout"
    elif rc == 99:
        raise SystemExit("mutate: error: the test process did not import purejaxql from the copy:\n" + text[-2000:])
    elif rc == 0:
        outcome = "survived"
    elif rc in (1, 2, 3):                       # failures, errors / interruptions, internal error
        outcome = "killed"
    else:
        outcome = f"error(rc={rc})"
    return outcome, secs, first, text[-3000:]


def write_row(path: Path, m: Mutant, outcome: str, secs: float, first: str, header: bool):
    with open(path, "a", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        if header:
            w.writerow(COLUMNS)
        w.writerow([m.ident, m.file, m.line, m.col, m.operator, m.original, m.mutated, m.line_text, outcome,
                    f"{secs:.1f}", first])


def summary(rows: List[dict], baseline: Dict[str, float], wall: float, command: str, source: str = "",
            tests: Optional[Dict[str, List[str]]] = None) -> str:
    files = sorted({r["file"] for r in rows}, key=lambda f: (list(TARGETS).index(f) if f in TARGETS else 99, f))
    lines = ["# Mutation report", "", f"Command: `{command}`", ""]
    if source:
        lines += [f"Sources: {source}", ""]
    lines += [f"Wall time: {wall / 60:.1f} min", "",
             "| file | mutants | killed | survived | timeout | other | score (killed / (killed + survived)) |",
             "|---|---|---|---|---|---|---|"]
    tot = {"n": 0, "killed": 0, "survived": 0, "timeout": 0, "other": 0}
    for f in files + ["total"]:
        rs = rows if f == "total" else [r for r in rows if r["file"] == f]
        c = {k: sum(r["outcome"] == k for r in rs) for k in ("killed", "survived", "timeout")}
        other = len(rs) - sum(c.values())
        score = c["killed"] / max(c["killed"] + c["survived"], 1)
        lines.append(f"| {f} | {len(rs)} | {c['killed']} | {c['survived']} | {c['timeout']} | {other} | "
                     f"{100 * score:.0f}% |")
    if baseline:
        lines += ["", "Unmutated test runs (s): " + ", ".join(f"{k} {v:.0f}" for k, v in baseline.items())]
    if tests:
        lines += ["", "Tests run per file (`pytest -n 0 -x`):", ""]
        lines += [f"- {f}: `{' '.join(shlex.quote(t) for t in ts)}`" for f, ts in tests.items()]
    surv = [r for r in rows if r["outcome"] == "survived"]
    if surv:
        lines += ["", "## Survivors", "", "| id | operator | original | mutated |", "|---|---|---|---|"]
        lines += [f"| `{r['id']}` | {r['operator']} | `{r['original']}` | `{r['mutated']}` |" for r in surv]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default=",".join(TARGETS),
                    help="comma-separated files under purejaxql/ (default: %(default)s)")
    ap.add_argument("--max-mutants", type=int, default=None,
                    help="sample this many mutants in all, split over the files by their quotas (fixed --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--same-as", type=Path, default=None,
                    help="run exactly the mutants listed in an earlier report (TSV) instead of sampling")
    ap.add_argument("--report", type=Path, help="TSV report to write (a markdown summary goes to REPORT.md)")
    ap.add_argument("--list", action="store_true", help="only list the candidates (counts; with -v every one)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--repo", type=Path, default=REPO, help="repository to copy (default: this one)")
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="leave out the mutants listed in this earlier report before sampling (repeatable): "
                         "a second sample that adds to the first")
    ap.add_argument("--summary-only", action="store_true",
                    help="run nothing: rewrite REPORT.md from the rows of --report (e.g. after joining reports)")
    ap.add_argument("--only", default=None,
                    help="with --same-as: only the rows whose outcome (e.g. survived) or id is in this "
                         "comma-separated list")
    ap.add_argument("--tests", default=None,
                    help="run these pytest arguments (one string, split as a shell would) for every file instead of "
                         "the built-in file -> tests map")
    ap.add_argument("--rev", default=None,
                    help="mutate the files of this git revision (e.g. HEAD) instead of the working tree")
    ap.add_argument("--workdir", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--timeout-factor", type=float, default=3.0,
                    help="a mutant times out after this many times the unmutated run, plus 60 s")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="minutes: start no new mutant after this (the rest are reported as not_run)")
    ap.add_argument("--plan-only", action="store_true",
                    help="run nothing: write the chosen mutants to --report with outcome 'planned' (to run the "
                         "very same mutants on two revisions with --same-as)")
    ap.add_argument("--no-jax-cache", action="store_true",
                    help="compile everything afresh in each test process (default: a persistent JAX "
                         "compilation cache in the work folder, shared by the runs)")
    args = ap.parse_args(argv)

    files = [f.strip() for f in args.files.split(",") if f.strip()]
    tests_of = {f: (shlex.split(args.tests) if args.tests else list(TARGETS[f]["tests"])) for f in TARGETS}
    unknown = [f for f in files if f not in TARGETS]
    if unknown:
        ap.error(f"unknown file {unknown[0]!r}; known: {', '.join(TARGETS)}")
    if not args.list and args.report is None:
        ap.error("--report is required (unless --list)")
    if args.summary_only:
        rows = read_report(args.report)
        wall = sum(float(r["seconds"] or 0) for r in rows)
        md = summary(rows, {}, wall, "python tools/mutate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     f"git revision {args.rev}" if args.rev else "", {f: TARGETS[f]["tests"] for f in TARGETS})
        Path(str(args.report) + ".md").write_text(md.replace("Wall time:", "Time in mutant test runs:"))
        print(md)
        return 0
    repo = args.repo.resolve()

    if args.list:
        pool = {f: candidates(repo / "purejaxql" / f, f) for f in files}
        for f, ms in pool.items():
            ops: Dict[str, int] = {}
            for m in ms:
                ops[m.operator] = ops.get(m.operator, 0) + 1
            print(f"{f}: {len(ms)} candidates  " + " ".join(f"{k}={v}" for k, v in sorted(ops.items())))
            if args.verbose:
                for m in ms:
                    print(f"   {m.ident:40s} {m.original!r} -> {m.mutated!r}")
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="purejaxql-mutate-"))
    work.mkdir(parents=True, exist_ok=True)
    root = make_copy(repo, work, args.rev)      # mutants are made from (and applied to) the copy's sources
    pool = {f: candidates(root / "purejaxql" / f, f) for f in files}
    for old_report in args.exclude:
        gone, _ = match_previous(read_report(old_report), pool)
        gone_ids = {id(m) for m in gone}
        pool = {f: [m for m in ms if id(m) not in gone_ids] for f, ms in pool.items()}
    missing: List[dict] = []
    if args.same_as is not None:
        rows = read_report(args.same_as)
        if args.only:
            wanted = {w.strip() for w in args.only.split(",")}
            rows = [r for r in rows if r["outcome"] in wanted or r["id"] in wanted]
        chosen, missing = match_previous(rows, pool)
        chosen = [m for m in chosen if m.file in files]
    elif args.max_mutants is not None:
        total_quota = sum(TARGETS[f]["quota"] for f in files)
        quotas = {f: max(1, round(args.max_mutants * TARGETS[f]["quota"] / total_quota)) for f in files}
        chosen = sample(pool, quotas, args.seed)
    else:
        chosen = sample(pool, {}, args.seed)
    print(f"mutate: {len(chosen)} mutants over {len(files)} files" +
          (f"; {len(missing)} of the earlier report's mutants are no longer in the sources" if missing else ""),
          flush=True)

    if args.plan_only:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.unlink(missing_ok=True)
        for i, m in enumerate(chosen):
            write_row(args.report, m, "planned", 0.0, "", i == 0)
        print(f"mutate: {len(chosen)} mutants written to {args.report}")
        return 0
    for f in files:
        tests_of[f], gone = existing_tests(root, tests_of[f])
        if gone:
            print(f"mutate: {f}: not in this revision, left out: {' '.join(gone)}", flush=True)
    source = "working tree of " + str(repo)
    if args.rev is not None:
        source = "git revision " + subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", args.rev],
                                                  capture_output=True, text=True, check=True).stdout.strip()
    env = test_env(root, work, None if args.no_jax_cache else work / "jax-cache")
    check = subprocess.run([sys.executable, "-c", "import purejaxql; print(purejaxql.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True)
    print(f"mutate: copy at {root}; purejaxql imports from {check.stdout.strip()}", flush=True)
    if not check.stdout.strip().startswith(str(root)):
        print("mutate: error: purejaxql does not import from the copy", file=sys.stderr)
        return 2

    report = args.report
    report.parent.mkdir(parents=True, exist_ok=True)
    if report.exists():
        report.unlink()
    t_start = time.monotonic()
    command = "python tools/mutate.py " + " ".join(argv if argv is not None else sys.argv[1:])

    # the unmutated tests must pass; their time sets each file's timeout
    baseline: Dict[str, float] = {}
    done: Dict[tuple, float] = {}
    for f in dict.fromkeys(m.file for m in chosen):
        if tuple(tests_of[f]) in done:              # the same tests as another file's: measured already
            baseline[f] = done[tuple(tests_of[f])]
            continue
        outcome, secs, first, tail = run_tests(root, env, tests_of[f], 1800)
        print(f"mutate: unmutated {f}: {outcome} in {secs:.0f} s", flush=True)
        if outcome != "survived":
            print(tail, file=sys.stderr)
            print(f"mutate: error: the tests of {f} fail without any mutation ({first})", file=sys.stderr)
            return 1
        baseline[f] = done[tuple(tests_of[f])] = secs

    header = True
    for i, m in enumerate(chosen, 1):
        if args.time_budget is not None and time.monotonic() - t_start > 60 * args.time_budget:
            write_row(report, m, "not_run", 0.0, "", header)
            header = False
            continue
        target = root / "purejaxql" / m.file
        original = target.read_bytes()
        try:
            target.write_bytes(m.apply(original))
            outcome, secs, first, _ = run_tests(root, env, tests_of[m.file],
                                                args.timeout_factor * baseline[m.file] + 60)
        finally:
            target.write_bytes(original)
        write_row(report, m, outcome, secs, first, header)
        header = False
        print(f"[{i}/{len(chosen)}] {outcome:8s} {secs:5.0f}s {m.ident}  {m.original} -> {m.mutated}"
              + (f"  ({first})" if first else ""), flush=True)
    for row in missing:
        with open(report, "a", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            if header:
                w.writerow(COLUMNS)
                header = False
            w.writerow([row.get(c, "") if c != "outcome" else "missing" for c in COLUMNS])

    rows = read_report(report) if report.exists() else []
    wall = time.monotonic() - t_start
    md = summary(rows, baseline, wall, command, source, {f: tests_of[f] for f in baseline})
    Path(str(report) + ".md").write_text(md)
    print(md)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
