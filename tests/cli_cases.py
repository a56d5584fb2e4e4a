"""Runs many command lines through purejaxql's CLI in one process (one import of jax and jaxmarl instead of
one per case). The driver, ``python tests/cli_cases.py cases.json``, prints a JSON list of
``{"code", "err", "before", "after"}`` per case (exit code, stderr, files before and after)."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def cli_cases(cases, folder, template=None, cwd=None):
    """Each ``(module, args)`` through the CLI function ``python -m purejaxql.<module>`` calls, all in one
    process (no 10 s of imports per case), each in a fresh copy of the folder ``template(path)`` makes
    (empty without it) under ``folder``, or all in ``cwd`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    if template is not None:
        template(folder / "template")
    (folder / "cases.json").write_text(json.dumps({"cases": cases, "cwd": str(cwd) if cwd else None}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "cli_cases.py"),
                        str(folder / "cases.json")], env=env, capture_output=True, text=True, timeout=500)
    line = [x for x in r.stdout.splitlines() if x.startswith("CASES ")]
    assert r.returncode == 0 and line, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(line[0][6:])


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def main():
    import importlib

    importlib.import_module("jaxmarl")  # before stderr is redirected: importing it replaces sys.stderr
    from purejaxql.cli import cli
    spec = Path(sys.argv[1]).resolve()
    data = json.loads(spec.read_text())
    cases = data["cases"]
    template = spec.parent / "template"
    out = []
    for i, (module, args) in enumerate(cases):
        work = Path(data["cwd"]) if data["cwd"] else spec.parent / f"case{i}"
        if data["cwd"]:
            pass
        elif template.is_dir():
            shutil.copytree(template, work)
        else:
            work.mkdir()
        os.chdir(work)
        before, err = files(work), io.StringIO()
        code = 0
        with contextlib.redirect_stderr(err):
            try:
                cli(importlib.import_module(f"purejaxql.{module}").SPEC, list(args))
            except SystemExit as e:
                code = e.code
        out.append({"code": code, "err": err.getvalue(), "before": before, "after": files(work)})
    print("CASES " + json.dumps(out))


if __name__ == "__main__":
    main()
