"""README's "Configuration keys" tables and the defaults in purejaxql/config.py (the one source of the
defaults) tell the same story: every key an algorithm reads is documented, and every default README states
as a plain value is the value the code uses."""
import re
from pathlib import Path

import pytest

from purejaxql.config import PQN_DEFAULTS, RUN_KEYS, defaults_for
from purejaxql.spec import REPLAY_ALGORITHMS

# every key a replay learner reads (a key whose default differs between them, WQMIX_ALPHA, is documented
# per algorithm and not read as one plain value)
REPLAY_DEFAULTS = {k: v for a in REPLAY_ALGORITHMS for k, v in defaults_for(a).items()}

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README[README.index("## Configuration keys"):README.index("## What the algorithms do")]
REPLAY_TABLE, PQN_TABLE = SECTION.split("PQN (`pqn_*`) reads", 1)


def rows(table):
    """{key: README's default text} of a markdown table; a row naming several keys ("`A` / `B` | 1 / 2")
    gives each its own value."""
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([A-Z_]+)`", cells[0])
        values = [v.strip() for v in cells[1].split(" / ")] if " / " in cells[1] else [cells[1]] * len(keys)
        out.update(dict(zip(keys, values if len(values) == len(keys) else [cells[1]] * len(keys))))
    return out


def plain(text):
    """README's default as a value when it is a plain one (a number, True/False, a `word`), else None."""
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    if re.fullmatch(r"`[a-z_]+`", text):
        return text.strip("`")
    try:
        return float(text)
    except ValueError:
        return None


@pytest.mark.parametrize("table,defaults", [(REPLAY_TABLE, REPLAY_DEFAULTS),
                                            (PQN_TABLE, PQN_DEFAULTS)], ids=["replay", "pqn"])
def test_readme_states_the_defaults_the_code_uses(table, defaults):
    documented = rows(table)
    checked = 0
    for key, text in documented.items():
        value = plain(text)
        if value is None or key not in defaults:
            continue
        want = defaults[key]
        assert (value == want) if isinstance(want, (bool, str)) else (float(value) == float(want)), \
            f"README says {key} defaults to {text}, purejaxql/config.py to {want!r}"
        checked += 1
    assert checked >= (20 if table is REPLAY_TABLE else 10)  # the parser really reads the tables


def test_every_key_is_documented():
    documented = set(rows(REPLAY_TABLE)) | set(rows(PQN_TABLE)) | set(re.findall(r"`([A-Z_]+)`", PQN_TABLE))
    keys = set(REPLAY_DEFAULTS) | set(PQN_DEFAULTS) | RUN_KEYS
    missing = sorted(keys - documented - {"SEED", "NUM_SEEDS", "ENTITY", "PROJECT", "WANDB_MODE",
                                          "WANDB_LOG_ALL_SEEDS", "PROGRESS", "WATCHDOG_TIMEOUT"})
    assert not missing, f"keys README's Configuration keys tables do not mention: {missing}"
