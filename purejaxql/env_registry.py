"""Building an environment by name: ``make_env(cfg)`` turns ENV_NAME (+ MAP_NAME, TASK, ENV_KWARGS) into a JaxMARL
``MultiAgentEnv`` or one of the adapters (gymnax, Craftax, EnvPool Atari as a team of one; Jumanji's LBF and
RWARE), with one clear :class:`~purejaxql.config.ConfigError` for a name or setting that cannot be built;
``env_label`` is how runs and checkpoints name it. Re-exported by :mod:`purejaxql.environments`."""
from __future__ import annotations

import difflib
import importlib
import io
import sys
from typing import Any, Dict

from purejaxql.config import ConfigError

__all__ = ["import_jaxmarl", "import_extra", "make_env", "env_label"]


def import_extra(module: str, env_name: str, extra: str, package: str, what: str = ""):
    """``import module`` for an optional environment family, or one ConfigError naming the extra that
    installs it (``what``: a word on what the extra is, e.g. " (EnvPool)")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ENV_NAME {env_name} needs the {extra} extra{what}, which is not installed: "
                          f'pip install -e ".[{extra}]"  (or: pip install {package})') from None

def import_jaxmarl():
    """``import jaxmarl`` without the lines it prints on its first import ("Importing submoduled
    environments...", "... not found. Skipping import."): a run shows only what purejaxql says (what
    it writes to stderr still shows)."""
    if "jaxmarl" not in sys.modules:
        # jaxmarl's MABrax module sets sys.stdout / sys.stderr back to sys.__stdout__ / sys.__stderr__ while
        # importing, so those are pointed at the same streams too, and all four are restored afterwards
        saved = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
        sys.stdout = sys.__stdout__ = io.StringIO()
        sys.__stderr__ = sys.stderr
        try:
            import jaxmarl  # noqa: F401
        finally:
            sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved
    return sys.modules["jaxmarl"]


def make_env(cfg: Dict[str, Any]):
    """Build the env named by ENV_NAME (+ MAP_NAME for SMAX, TASK for lbf / rware, ENV_KWARGS): a JaxMARL env,
    Jumanji's Level-Based Foraging or Robot Warehouse (:class:`purejaxql.jumanji_env.JumanjiTeam`), or a gymnax one
    (``CartPole-v1``, ``Breakout-MinAtar``, ...), a Craftax one (``Craftax-Symbolic-v1``, ...) or an EnvPool
    Atari game (``Pong-v5``) as a team of one (:class:`purejaxql.gymnax_env.GymnaxTeam`,
    :class:`purejaxql.craftax_env.CraftaxTeam`, :class:`purejaxql.atari_env.EnvPoolTeam`); Overcooked's
    ``ENV_KWARGS.layout`` by name."""
    from purejaxql.atari_env import EnvPoolTeam, atari_close_matches, is_atari_name
    from purejaxql.craftax_env import CraftaxTeam, craftax_close_matches, is_craftax_name
    from purejaxql.gymnax_env import GymnaxTeam, gymnax_close_matches, is_gymnax_name
    from purejaxql.jumanji_env import JUMANJI_FAMILIES, JumanjiTeam, is_jumanji_name, refuse_other_jumanji
    from purejaxql.storm_env import STORM_NAMES, StormTeam
    jaxmarl = import_jaxmarl()
    name = cfg.get("ENV_NAME")
    kwargs = dict(cfg.get("ENV_KWARGS") or {})
    if is_gymnax_name(name):
        return GymnaxTeam(name, **kwargs)
    if is_craftax_name(name):
        return CraftaxTeam(name, **kwargs)
    if is_atari_name(name):
        return EnvPoolTeam(name, seed=int(cfg.get("SEED") or 0), **kwargs)
    if is_jumanji_name(name):
        return JumanjiTeam(name, cfg.get("TASK"), **kwargs)
    if cfg.get("TASK") is not None:
        raise ConfigError(f"TASK {cfg['TASK']!r} names a task of ENV_NAME lbf or rware, not of {name}")
    if name not in jaxmarl.registered_envs:
        refuse_other_jumanji(name)
        close = (difflib.get_close_matches(str(name), jaxmarl.registered_envs, n=3) + gymnax_close_matches(name)
                 + craftax_close_matches(name) + atari_close_matches(name)
                 + difflib.get_close_matches(str(name), list(JUMANJI_FAMILIES), n=2))
        raise ConfigError(f"unknown ENV_NAME {name!r}" + (f"; close matches: {close}" if close else ""))
    if "SMAX" in name:
        from jaxmarl.environments.smax import map_name_to_scenario
        map_name = cfg.get("MAP_NAME") or "3m"
        try:
            kwargs["scenario"] = map_name_to_scenario(map_name)
        except Exception:
            raise ConfigError(f"unknown SMAX MAP_NAME {map_name!r}") from None
    if name in ("overcooked", "overcooked_v2"):
        kwargs["layout"] = _overcooked_layout(name, kwargs.get("layout", "cramped_room"))
    if name == "jaxnav" and "act_type" not in kwargs:   # JaxNav's discrete action set (15 actions); min_v 0 is its rule
        kwargs.update(act_type="Discrete", min_v=kwargs.get("min_v", 0.0))
    if name.startswith("MPE") and "action_type" not in kwargs:
        try:  # some MPE scenarios default to continuous actions; ask for discrete ones where possible
            return jaxmarl.make(name, action_type="Discrete", **kwargs)
        except TypeError:  # the scenario takes no action_type
            pass
    try:
        env = jaxmarl.make(name, **kwargs)
    except ImportError as e:   # MABrax without brax, ...: jaxmarl's message names what to install
        raise ConfigError(f"ENV_NAME {name} needs a package that is not installed: {e}") from None
    except ValueError as e:    # JaxRobotarium without jaxrobotarium
        if "requires" not in str(e):
            raise
        raise ConfigError(f"ENV_NAME {name}: {e}") from None
    except TypeError as e:     # e.g. LearnedPolicyEnemySMAX without its policy
        raise ConfigError(f"ENV_NAME {name} cannot be built from ENV_KWARGS {sorted(kwargs)}: {e}") from None
    if name in STORM_NAMES:   # observations not keyed by agent: purejaxql.storm_env presents them per agent
        return StormTeam(name, env)
    if name == "coin_game":   # one episode: num_outer_steps games of num_inner_steps steps, then done
        env.max_steps = env.num_inner_steps * env.num_outer_steps
    return env


def _overcooked_layout(name: str, layout):
    """ENV_KWARGS.layout for Overcooked: a layout's name -> the layout jaxmarl's env takes (v1: its dict;
    v2 looks names up itself); an unknown name lists the available ones."""
    if name == "overcooked":
        from jaxmarl.environments.overcooked import overcooked_layouts as layouts
    else:
        from jaxmarl.environments.overcooked_v2.layouts import overcooked_v2_layouts as layouts
    if not isinstance(layout, str):
        return layout
    if layout not in layouts:
        raise ConfigError(f"unknown {name} layout {layout!r} (ENV_KWARGS.layout); available: {sorted(layouts)}")
    return layouts[layout] if name == "overcooked" else layout


def env_label(cfg: Dict[str, Any]) -> str:
    """How runs and checkpoints name the env: ENV_NAME, plus ``_<MAP_NAME>`` for SMAX, ``_<TASK>`` for lbf / rware."""
    from purejaxql.jumanji_env import task_label
    task = task_label(cfg["ENV_NAME"], cfg.get("TASK"))
    return cfg["ENV_NAME"] + (f"_{cfg.get('MAP_NAME') or '3m'}" if "SMAX" in cfg["ENV_NAME"] else
                              f"_{task}" if task else "")
