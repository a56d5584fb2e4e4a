"""Craftax (Matthews et al. 2024) as a team of one: ``Craftax-Symbolic-v1``, ``Craftax-Pixels-v1`` and their
``Craftax-Classic-*`` versions behind the JaxMARL ``MultiAgentEnv`` interface the training loops take, like the
gymnax adapter (:mod:`purejaxql.gymnax_env`). Needs the ``craftax`` extra: ``pip install -e ".[craftax]"``.

**Optimistic resets.** Building a Craftax world is far dearer than a step. Auto-resetting every env on every
step (what ``jax.vmap`` of a ``lax.select`` does: both branches run) would spend most of the time generating
worlds nobody uses. :meth:`CraftaxTeam.batch_step` (which ``CTRolloutManager.batch_step`` calls for a whole
batch) steps the B envs, then builds only ``n = max(1, B // optimistic_reset_ratio)`` fresh worlds, and the
k-th env (in batch order) whose episode ended this step starts in world ``k mod n``. Two envs can share a
starting world only if more than ``n`` episodes end on the same step; with the original PQN Craftax setting
(ratio 16) that is rare, and ``optimistic_reset_ratio: 1`` gives every finished env its own world.

**Time limits.** An episode ends on death, on beating the final boss (Craftax), in lava (Classic) or at
``max_timesteps`` (``EnvParams``; 100000 for Craftax, 10000 for Classic). ``infos["truncated"]`` marks the
ends that were the time limit only (a real ending on the last allowed step wins, as in Gymnasium).

``ENV_KWARGS``: ``optimistic_reset_ratio`` (default 16) and any ``EnvParams`` field (``max_timesteps``, ...).
"""
from __future__ import annotations

import difflib
from typing import Any, Dict

import jax
import jax.numpy as jnp

from purejaxql.config import ConfigError
from purejaxql.single_agent import AGENT, TeamOfOne

__all__ = ["CRAFTAX_NAMES", "is_craftax_name", "craftax_close_matches", "CraftaxTeam"]

CRAFTAX_NAMES = ("Craftax-Symbolic-v1", "Craftax-Pixels-v1", "Craftax-Classic-Symbolic-v1",
                 "Craftax-Classic-Pixels-v1")
_NO_LIMIT = 2 ** 31 - 1


def is_craftax_name(name: Any) -> bool:
    """Is ``name`` one of the Craftax ids (no import of craftax needed)?"""
    return isinstance(name, str) and name in CRAFTAX_NAMES


def craftax_close_matches(name: str):
    """Craftax ids close to a misspelt ``name`` (for the unknown-ENV_NAME message)."""
    return difflib.get_close_matches(str(name), CRAFTAX_NAMES, n=3)


def _make_craftax(name: str):
    from purejaxql.env_registry import import_extra
    return import_extra("craftax.craftax_env", name, "craftax", "craftax").make_craftax_env_from_name(
        name, auto_reset=False)


class CraftaxTeam(TeamOfOne):
    """A Craftax environment presented as a one-agent JaxMARL ``MultiAgentEnv`` with optimistic resets.

    Args:
        name: one of :data:`CRAFTAX_NAMES`.
        optimistic_reset_ratio: envs per fresh world in :meth:`batch_step` (>= 1; 1 = one world per finished env).
        **params: ``EnvParams`` fields set on the default parameters (``max_timesteps``, ...).
    """

    def __init__(self, name: str, optimistic_reset_ratio: int = 16, **params):
        env = _make_craftax(name)
        defaults = env.default_params
        fields = set(getattr(defaults, "__dataclass_fields__", {}))
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ConfigError(f"ENV_KWARGS {unknown} are not EnvParams fields of {name} nor "
                              f"optimistic_reset_ratio; fields: {sorted(fields)}")
        if int(optimistic_reset_ratio) < 1:
            raise ConfigError(f"ENV_KWARGS optimistic_reset_ratio must be >= 1, got {optimistic_reset_ratio}")
        self._craftax_env = env
        self.params = defaults.replace(**params) if params else defaults
        self.reset_ratio = int(optimistic_reset_ratio)
        self.name = name
        self.max_steps = int(self.params.max_timesteps)
        self._action_space = env.action_space(self.params)
        self._observation_space = env.observation_space(self.params)

    def _reset_one(self, key):
        obs, state = self._craftax_env.reset_env(key, self.params)
        return jnp.asarray(obs, jnp.float32), state

    def _step_one(self, key, state, action):
        """One env step without a reset -> obs, state, reward, done, truncated."""
        obs, state, reward, done, _ = self._craftax_env.step_env(key, state, action, self.params)
        real_end = self._craftax_env.is_terminal(state, self.params.replace(max_timesteps=_NO_LIMIT))
        truncated = jnp.logical_and(done, jnp.logical_not(real_end))
        return jnp.asarray(obs, jnp.float32), state, jnp.asarray(reward, jnp.float32), done, truncated

    @staticmethod
    def _out(obs, state, reward, done, truncated):
        return {AGENT: obs}, state, {AGENT: reward}, {AGENT: done, "__all__": done}, {"truncated": truncated}

    def reset(self, key):
        obs, state = self._reset_one(key)
        return {AGENT: obs}, state

    def step(self, key, state, actions: Dict[str, Any]):
        """One env with its own fresh world when the episode ends (the unbatched path)."""
        k_step, k_reset = jax.random.split(key)
        obs, state, reward, done, truncated = self._step_one(k_step, state, actions[AGENT])
        obs_re, state_re = self._reset_one(k_reset)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state)
        return self._out(jax.lax.select(done, obs_re, obs), state, reward, done, truncated)

    def batch_step(self, key, states, actions: Dict[str, Any]):
        """Step a batch of B envs (leading axis of ``states`` and ``actions``) with optimistic resets."""
        action = actions[AGENT]
        B = action.shape[0]
        n = max(1, B // self.reset_ratio)
        k_step, k_reset = jax.random.split(key)
        obs, states, reward, done, truncated = jax.vmap(self._step_one)(
            jax.random.split(k_step, B), states, action)
        obs_re, states_re = jax.vmap(self._reset_one)(jax.random.split(k_reset, n))   # n fresh worlds
        slot = (jnp.cumsum(done) - 1) % n   # the k-th finished env (batch order) takes world k mod n

        def restart(fresh, cur):   # fresh (n, ...), cur (B, ...) -> (B, ...)
            return jnp.where(done.reshape((B,) + (1,) * (cur.ndim - 1)), fresh[slot], cur)

        return self._out(restart(obs_re, obs), jax.tree.map(restart, states_re, states), reward, done, truncated)
