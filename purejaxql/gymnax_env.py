"""Single-agent environments as a team of one: a gymnax environment (CartPole, Acrobot, MinAtar, bsuite, ...)
behind the JaxMARL ``MultiAgentEnv`` interface the training loops take, so PQN (``MIXER=none``) and every
replay learner run on it unchanged, with the run folder, resume, HYP_TUNE and checkpoints.

The one agent is ``agent_0``. ``reset(key)`` and ``step(key, state, actions)`` return dicts keyed by it;
``dones["__all__"]`` is the episode end (terminated or truncated) and gymnax auto-resets inside ``step``,
as JaxMARL's envs do. ``infos["truncated"]`` marks episodes cut by the time limit
(``max_steps_in_episode``) that did not also terminate on that step (gymnax's ``truncated`` and not
``terminated``: a real ending wins, as in Gymnasium; DeepSea's every episode ends on its last allowed step):
the loops leave such a step's missing bootstrap out of the loss (TIMEOUT_AS_TERMINAL=False).

``ENV_KWARGS`` keys that name a field of the env's ``EnvParams`` (e.g. MemoryChain's ``memory_length``,
``max_steps_in_episode``) set that parameter; the others go to the env's constructor.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict

import jax.numpy as jnp

from purejaxql.config import ConfigError
from purejaxql.single_agent import AGENT, TeamOfOne

__all__ = ["is_gymnax_name", "GymnaxTeam"]


def _gymnax():
    try:
        import gymnax
    except ImportError:  # pragma: no cover - gymnax comes with jaxmarl
        raise ConfigError("single-agent environments need gymnax: pip install gymnax") from None
    return gymnax


def is_gymnax_name(name: Any) -> bool:
    """Is ``name`` one of gymnax's registered environment ids (``CartPole-v1``, ``Breakout-MinAtar``, ...)?"""
    return isinstance(name, str) and name in _gymnax().registered_envs


def gymnax_close_matches(name: str):
    """gymnax ids close to a misspelt ``name`` (for the unknown-ENV_NAME message)."""
    return difflib.get_close_matches(str(name), _gymnax().registered_envs, n=3)


class GymnaxTeam(TeamOfOne):
    """A gymnax environment presented as a one-agent JaxMARL ``MultiAgentEnv``.

    Args:
        name: a gymnax id (``gymnax.registered_envs``).
        **kwargs: ``EnvParams`` fields (set on the default parameters) and constructor arguments.
    """

    def __init__(self, name: str, **kwargs):
        gymnax = _gymnax()
        try:
            probe_env, probe_params = gymnax.make(name)
            fields = set(getattr(probe_params, "__dataclass_fields__", {}))
        except Exception as e:  # pragma: no cover - a registered id that fails to build
            raise ConfigError(f"gymnax could not build {name!r}: {e}") from None
        param_kwargs = {k: v for k, v in kwargs.items() if k in fields}
        ctor_kwargs = {k: v for k, v in kwargs.items() if k not in fields}
        try:
            env, params = gymnax.make(name, **ctor_kwargs) if ctor_kwargs else (probe_env, probe_params)
        except TypeError as e:
            raise ConfigError(f"ENV_KWARGS {sorted(ctor_kwargs)} are not EnvParams fields of {name} "
                              f"({sorted(fields)}) nor arguments of its constructor: {e}") from None
        self._gymnax_env = env
        self.params = params.replace(**param_kwargs) if param_kwargs else params
        self.name = name
        self.max_steps = int(self.params.max_steps_in_episode)
        self._action_space = env.action_space(self.params)
        if not hasattr(self._action_space, "n"):
            raise ConfigError(f"ENV_NAME {name} has a continuous action space "
                              f"({type(self._action_space).__name__}); Q-learning needs discrete actions")
        self._observation_space = env.observation_space(self.params)

    def reset(self, key):
        obs, state = self._gymnax_env.reset(key, self.params)
        return {AGENT: jnp.asarray(obs, jnp.float32)}, state

    def step(self, key, state, actions: Dict[str, Any]):
        obs, state, reward, terminated, truncated, _ = self._gymnax_env.step(key, state, actions[AGENT], self.params)
        done = jnp.logical_or(terminated, truncated)
        infos = {"truncated": jnp.logical_and(truncated, jnp.logical_not(terminated))}  # a real ending wins
        return ({AGENT: jnp.asarray(obs, jnp.float32)}, state, {AGENT: jnp.asarray(reward, jnp.float32)},
                {AGENT: done, "__all__": done}, infos)
