"""Jumanji's cooperative grid worlds as JaxMARL-style teams: Level-Based Foraging (``ENV_NAME=lbf``) and Robot
Warehouse (``ENV_NAME=rware``), the two benchmarks EPyMARL introduced, in InstaDeep's pure-JAX versions
(``LevelBasedForaging``, ``RobotWarehouse``). Every algorithm and variant runs on them unchanged. Needs the
``jumanji`` extra: ``pip install -e ".[jumanji]"``.

**Tasks** are named as EPyMARL names them (``TASK``, also with its ``Foraging-`` / ``rware-`` prefix and ``-vN``):

* LBF ``[<s>s-]<g>x<g>-<n>p-<f>f[-coop]``: a g × g grid, n agents, f food items; ``-coop`` makes every food need
  all agents together (Jumanji: the sum of the three lowest agent levels); ``<s>s-`` limits sight to s cells
  (full grid otherwise). As lb-foraging registers them: agent levels 1 to 2, episodes of 50 steps.
  Preset ``25x25-4p-4f``: 4 agents and 4 food on a 25 × 25 grid, episodes of 200 steps.
* RWARE ``<tiny|small|medium|large>-<n>ag[-easy|-hard]``: 1 × 3, 2 × 3, 2 × 5 or 3 × 5 shelf blocks of height 8,
  n robots, n requested shelves (2n easy, n / 2 hard), sensor range 1, episodes of 500 steps.

``ENV_KWARGS`` override a task's settings: LBF ``grid_size``, ``fov``, ``num_agents``, ``num_food``,
``max_agent_level``, ``force_coop``, ``time_limit``, ``normalize_reward``, ``penalty``; RWARE ``shelf_rows``,
``shelf_columns``, ``column_height``, ``num_agents``, ``sensor_range``, ``request_queue_size``, ``time_limit``.
``ENV_NAME=LevelBasedForaging-v0`` / ``RobotWarehouse-v0`` (no TASK) builds Jumanji's registered defaults.

**What the loops see.** Agents ``agent_0`` ... ; each one's vector observation as float32 (LBF: food (x, y,
level) triplets, then its own triplet, then the others'; RWARE: its sensor view); Jumanji's action masks as
available actions; rewards per agent (LBF: each agent's own share; RWARE's reward is one number for the
team, a delivered shelf, split equally so that the team reward counts deliveries); the global state is the
agents' observations joined (what EPyMARL gives QMIX on these tasks). Episodes auto-reset inside ``step``.
An episode cut at ``time_limit`` is a time-out (``infos["truncated"]``), not a terminal state; the real ends
(LBF: all food eaten; RWARE: two robots collide, Jumanji's rule) win when both happen on one step.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp

from purejaxql.config import ConfigError

__all__ = ["JUMANJI_FAMILIES", "is_jumanji_name", "refuse_other_jumanji", "JumanjiTeam", "JumanjiState",
           "task_label"]

# ENV_NAME -> family; the Jumanji ids build Jumanji's registered defaults
JUMANJI_FAMILIES = {"lbf": "lbf", "rware": "rware", "LevelBasedForaging-v0": "lbf", "RobotWarehouse-v0": "rware"}
DEFAULT_TASKS = {"lbf": "8x8-2p-2f-coop", "rware": "tiny-2ag"}

LBF_PATTERN = re.compile(r"^(?:Foraging-)?(?:(?P<sight>\d+)s-)?(?P<size>\d+)x(?P<size2>\d+)-(?P<agents>\d+)p-"
                         r"(?P<food>\d+)f(?P<coop>-coop)?(?:-v\d+)?$")
RWARE_PATTERN = re.compile(r"^(?:rware-)?(?P<size>tiny|small|medium|large)-(?P<agents>\d+)ag"
                           r"(?:-(?P<difficulty>easy|hard))?(?:-v\d+)?$")
LBF_PATTERN_TEXT = "[<s>s-]<g>x<g>-<n>p-<f>f[-coop], e.g. 8x8-2p-2f-coop, 2s-10x10-3p-3f, 15x15-4p-5f"
RWARE_PATTERN_TEXT = "<tiny|small|medium|large>-<n>ag[-easy|-hard], e.g. tiny-2ag, small-4ag, tiny-4ag-hard"
LBF_PRESETS: Dict[str, Dict[str, Any]] = {
    # the 25 x 25 foraging task: 4 agents, 4 food, 6 actions, 200-step episodes, team reward
    "25x25-4p-4f": dict(grid_size=25, fov=25, num_agents=4, num_food=4, max_agent_level=2, force_coop=False,
                        time_limit=200),
}
LBF_KEYS = ("grid_size", "fov", "num_agents", "num_food", "max_agent_level", "force_coop", "time_limit",
            "normalize_reward", "penalty")
RWARE_KEYS = ("shelf_rows", "shelf_columns", "column_height", "num_agents", "sensor_range", "request_queue_size",
              "time_limit")
_RWARE_SIZES = {"tiny": (1, 3), "small": (2, 3), "medium": (2, 5), "large": (3, 5)}


def is_jumanji_name(name: Any) -> bool:
    """Is ``name`` one of the Jumanji teams purejaxql runs (no import of jumanji needed)?"""
    return isinstance(name, str) and name in JUMANJI_FAMILIES


def refuse_other_jumanji(name: Any) -> None:
    """A Jumanji id purejaxql does not run (single-agent ones such as ``Snake-v1``, or Cleaner / Connector)
    is named as such rather than as an unknown ENV_NAME."""
    try:
        import jumanji
    except ImportError:
        return
    if isinstance(name, str) and name in jumanji.registered_environments():
        raise ConfigError(f"ENV_NAME {name} is a Jumanji environment that purejaxql does not run: of Jumanji's, "
                          f"the cooperative multi-agent LevelBasedForaging (ENV_NAME=lbf) and RobotWarehouse "
                          f"(ENV_NAME=rware) are supported; single-agent Jumanji tasks have no team to train")


def task_label(name: str, task: Optional[str]) -> str:
    """The TASK a run of ENV_NAME ``name`` uses (the family's default when none is given)."""
    if task is None and name in DEFAULT_TASKS:
        return DEFAULT_TASKS[name]
    return task


def lbf_settings(task: str) -> Dict[str, Any]:
    """An EPyMARL LBF task name -> the LevelBasedForaging settings."""
    if task in LBF_PRESETS:
        return dict(LBF_PRESETS[task])
    m = LBF_PATTERN.match(str(task))
    if m is None or m["size"] != m["size2"]:
        raise ConfigError(f"unknown lbf TASK {task!r}: expected {LBF_PATTERN_TEXT} (square grids), or a preset: "
                          f"{sorted(LBF_PRESETS)}")
    size = int(m["size"])
    return dict(grid_size=size, fov=int(m["sight"]) if m["sight"] else size, num_agents=int(m["agents"]),
                num_food=int(m["food"]), max_agent_level=2, force_coop=bool(m["coop"]), time_limit=50)


def rware_settings(task: str) -> Dict[str, Any]:
    """An EPyMARL RWARE task name -> the RobotWarehouse settings."""
    m = RWARE_PATTERN.match(str(task))
    if m is None:
        raise ConfigError(f"unknown rware TASK {task!r}: expected {RWARE_PATTERN_TEXT}")
    rows, columns = _RWARE_SIZES[m["size"]]
    agents = int(m["agents"])
    queue = {None: agents, "easy": 2 * agents, "hard": max(1, agents // 2)}[m["difficulty"]]
    return dict(shelf_rows=rows, shelf_columns=columns, column_height=8, num_agents=agents, sensor_range=1,
                request_queue_size=queue, time_limit=500)


def _settings(family: str, task: Optional[str], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    known = LBF_KEYS if family == "lbf" else RWARE_KEYS
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"ENV_KWARGS {unknown} are not {family} settings; known: {list(known)}")
    if task is None:
        return dict(kwargs)
    return {**(lbf_settings if family == "lbf" else rware_settings)(task), **kwargs}


def _build_lbf(settings: Dict[str, Any]):
    from jumanji.environments import LevelBasedForaging
    from jumanji.environments.routing.lbf.generator import RandomGenerator
    gen_keys = ("grid_size", "fov", "num_agents", "num_food", "max_agent_level", "force_coop")
    defaults = dict(grid_size=8, fov=8, num_agents=2, num_food=2, max_agent_level=2, force_coop=True)
    gen = {k: settings.get(k, defaults[k]) for k in gen_keys}
    gen["fov"] = min(int(gen["fov"]), int(gen["grid_size"]))
    if (gen["grid_size"] - 2) ** 2 - gen["num_agents"] <= 5 * gen["num_food"]:
        raise ConfigError(f"lbf: {gen['num_food']} food items and {gen['num_agents']} agents do not fit a "
                          f"{gen['grid_size']}x{gen['grid_size']} grid (food is placed off the edges, never "
                          f"adjacent: (grid - 2)^2 - agents must exceed 5 x food)")
    env_kw = {k: settings[k] for k in ("time_limit", "normalize_reward", "penalty") if k in settings}
    env = LevelBasedForaging(generator=RandomGenerator(**gen), **env_kw)
    return env, lambda state: jnp.all(state.food_items.eaten)   # a real end: every food item eaten


def _build_rware(settings: Dict[str, Any]):
    from jumanji.environments import RobotWarehouse
    from jumanji.environments.routing.robot_warehouse import utils as rware_utils
    from jumanji.environments.routing.robot_warehouse.generator import RandomGenerator
    defaults = dict(shelf_rows=1, shelf_columns=3, column_height=8, num_agents=2, sensor_range=1,
                    request_queue_size=2)
    gen = {k: settings.get(k, defaults[k]) for k in defaults}
    try:
        generator = RandomGenerator(**gen)
    except ValueError as e:   # e.g. an even shelf_columns
        raise ConfigError(f"rware: {e}") from None
    env = RobotWarehouse(generator=generator, **({"time_limit": settings["time_limit"]}
                                                 if "time_limit" in settings else {}))

    def collided(state) -> jax.Array:   # a real end: a robot on a cell another robot holds (Jumanji's rule)
        ids = jnp.arange(env.num_agents)
        return jnp.any(jax.vmap(lambda agent, i: rware_utils.is_collision(state.grid, agent, i))(state.agents, ids))
    return env, collided


class JumanjiState(NamedTuple):
    """The env state the loops carry: Jumanji's state and the action mask of its current observation."""
    env_state: Any
    action_mask: jax.Array   # (N, A) bool


class JumanjiTeam:
    """A Jumanji multi-agent environment presented as a JaxMARL ``MultiAgentEnv`` (see the module docstring).

    Args:
        name: ``lbf`` / ``rware`` (with ``task``) or ``LevelBasedForaging-v0`` / ``RobotWarehouse-v0``.
        task: an EPyMARL task name (default: ``8x8-2p-2f-coop`` / ``tiny-2ag``; none for the Jumanji ids).
        **kwargs: settings overriding the task's (module docstring).
    """

    time_limit_truncates = True   # an episode cut at time_limit is a time-out ...
    reports_truncation = True     # ... marked by infos["truncated"]

    def __init__(self, name: str, task: Optional[str] = None, **kwargs):
        from purejaxql.env_registry import import_extra
        import_extra("jumanji", name, "jumanji", "jumanji")
        family = JUMANJI_FAMILIES[name]
        if name in DEFAULT_TASKS:
            task = task_label(name, task)
        elif task is not None:
            raise ConfigError(f"ENV_NAME {name} builds Jumanji's registered defaults and takes no TASK "
                              f"({task!r}); use ENV_NAME={family} with TASK={task}")
        self.family, self.task = family, task
        self.settings = _settings(family, task, dict(kwargs))
        build: Callable = _build_lbf if family == "lbf" else _build_rware
        self._env, self._real_end = build(self.settings)
        self.name = f"{family}_{task}" if task else name
        self.num_agents = int(self._env.num_agents)
        self.agents = [f"agent_{i}" for i in range(self.num_agents)]
        self.max_steps = int(self._env.time_limit)
        self.num_actions = int(self._env.action_spec.num_values[0])
        obs_dim = int(self._env.observation_spec.agents_view.shape[-1])
        from jaxmarl.environments.spaces import Box, Discrete
        self._observation_space = Box(-1.0, float("inf"), (obs_dim,), jnp.float32)   # integer features as floats
        self._action_space = Discrete(self.num_actions)

    def observation_space(self, agent: str):
        return self._observation_space

    def action_space(self, agent: str):
        return self._action_space

    def _outputs(self, observation):
        views = jnp.asarray(observation.agents_view, jnp.float32)   # (N, D)
        return {a: views[i] for i, a in enumerate(self.agents)}

    def reset(self, key):
        env_state, timestep = self._env.reset(key)
        return self._outputs(timestep.observation), JumanjiState(env_state, timestep.observation.action_mask)

    def step(self, key, state: JumanjiState, actions: Dict[str, jax.Array]):
        acts = jnp.stack([jnp.asarray(actions[a], jnp.int32) for a in self.agents])   # (N,)
        env_state, timestep = self._env.step(state.env_state, acts)
        done = timestep.last()
        truncated = done & ~self._real_end(env_state)
        reward = jnp.asarray(timestep.reward, jnp.float32)
        if reward.ndim == 0:   # RWARE: one team reward, split equally
            reward = jnp.full((self.num_agents,), reward / self.num_agents)
        else:
            reward = jnp.reshape(reward, (self.num_agents,))
        reset_state, reset_timestep = self._env.reset(key)   # auto-reset: the next episode's start where done
        next_state, next_obs = jax.tree.map(lambda r, s: jnp.where(done, r, s),
                                            (reset_state, reset_timestep.observation),
                                            (env_state, timestep.observation))
        obs = self._outputs(next_obs)
        rewards = {a: reward[i] for i, a in enumerate(self.agents)}
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        return (obs, JumanjiState(next_state, next_obs.action_mask), rewards, dones,
                {"truncated": truncated})

    def get_avail_actions(self, state: JumanjiState) -> Dict[str, jax.Array]:
        return {a: state.action_mask[i] for i, a in enumerate(self.agents)}
