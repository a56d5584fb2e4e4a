"""Atari through EnvPool (Weng et al. 2022) as a team of one: ``Pong-v5``, ``Breakout-v5``, ... (every id in
``envpool.list_all_envs()`` ending in ``-v5``). The games run in EnvPool's C++ threads; the learner runs in
the compiled program. Needs the ``atari`` extra: ``pip install -e ".[atari]"`` (EnvPool ships the game
files in ``envpool-assets``).

**How the program talks to EnvPool.** :meth:`EnvPoolTeam.batch_reset` and :meth:`EnvPoolTeam.batch_step`
(which ``CTRolloutManager`` calls for a whole batch) are ordered host callbacks (``jax.experimental.
io_callback``): the pool resets or steps all its B games at once and hands back uint8 frames, which the
program turns into (84, 84, 4) images in [0, 1] for the convolutional agent. Each ``CTRolloutManager`` (the
training envs; the evaluation envs) gets its own pool: its ``batch_reset`` is traced once and draws a pool
number then, and the pool is made the first time the program runs that reset. The env state the program
carries is the pool's number, so a checkpoint holds no pointer into this process and a resumed run reaches
its pool by number (managers are built in the same order in every process; the pool is rebuilt and reset
when the process is new). EnvPool's own XLA custom calls also run on JAX 0.10, but their state is such a
pointer. Consequences:

* one seed per process: ``NUM_SEEDS`` > 1, HYP_TUNE's vmapped grid and sharding are refused (the pool is not
  a JAX value to vmap); runs are not bit-reproducible (EnvPool's threads draw from their own generator,
  seeded by SEED);
* EnvPool resets a finished game on the *next* step (that step ignores its action and pays 0): here as in the
  original PQN Atari script, that one transition per episode goes into the loss;
* RESUME in a new process restarts the games (a fresh pool) while the restored carry holds the last
  observations of the old ones: the first transition after resuming joins two games, and the episode then
  running reports a return that mixes them;
* the greedy evaluation stops training while it plays (``TEST_NUM_ENVS`` games until each has ended, at
  most ``TEST_NUM_STEPS``); the original plays its test games beside the training ones;
* ``episodic_life: True`` (the original setting) ends an episode at every lost life, and ``reward_clip``
  clips rewards to [-1, 1]: the returns this run reports are then per life and clipped. Set both False
  (``alg.ENV_KWARGS.episodic_life=False alg.ENV_KWARGS.reward_clip=False``) for game scores.

``ENV_KWARGS`` go to ``envpool.make`` (``episodic_life``, ``reward_clip``, ``frame_skip``, ``noop_max``,
``repeat_action_probability``, ``max_episode_steps``, ``img_height``, ...); an unknown key is named.
"""
from __future__ import annotations

import difflib
import itertools
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from purejaxql.config import ConfigError
from purejaxql.single_agent import AGENT, TeamOfOne

__all__ = ["is_atari_name", "atari_close_matches", "EnvPoolTeam"]


def _envpool(name: str = "Atari"):
    from purejaxql.env_registry import import_extra
    return import_extra("envpool", name, "atari", "envpool", " (EnvPool)")


def is_atari_name(name: Any) -> bool:
    """An Atari id by its form (``<Game>-v5``), so a missing EnvPool is reported by name."""
    return isinstance(name, str) and name.endswith("-v5") and "-" not in name[:-3]


def atari_close_matches(name: str):
    """EnvPool Atari ids close to a misspelt ``name`` (none when EnvPool is not installed)."""
    try:
        import envpool
    except ImportError:
        return []
    return difflib.get_close_matches(str(name), [e for e in envpool.list_all_envs() if e.endswith("-v5")], n=3)


class _Space:
    def __init__(self, shape=(), n=None):
        self.shape, self.dtype = tuple(shape), jnp.float32
        if n is not None:
            self.n = n


class EnvPoolTeam(TeamOfOne):
    """An EnvPool Atari game presented as a one-agent ``MultiAgentEnv`` that steps whole batches.

    Args:
        name: an EnvPool Atari id (``Pong-v5``).
        seed: EnvPool's seed for the games (the run's SEED).
        **kwargs: ``envpool.make`` options.
    """

    runs_on_host = True           # one seed per process (purejaxql.experiment refuses NUM_SEEDS > 1)

    def __init__(self, name: str, seed: int = 0, **kwargs):
        envpool = _envpool(name)
        if name not in envpool.list_all_envs():
            close = atari_close_matches(name)
            raise ConfigError(f"unknown ENV_NAME {name!r} (EnvPool Atari)" +
                              (f"; close matches: {close}" if close else ""))
        try:
            spec = envpool.make_spec(name, **kwargs)
        except Exception as e:
            raise ConfigError(f"ENV_KWARGS {sorted(kwargs)} for {name}: {e}") from None
        if len(spec.observation_space.shape) != 3 or not hasattr(spec.action_space, "n"):
            raise ConfigError(f"ENV_NAME {name} is not an Atari game (EnvPool gives observations of shape "
                              f"{spec.observation_space.shape} and {type(spec.action_space).__name__} actions); "
                              "the EnvPool adapter takes its Atari games (discrete actions, stacked frames)")
        self.name = name
        self._make = lambda B: envpool.make(name, env_type="gymnasium", num_envs=B, batch_size=B,
                                            seed=int(seed), **kwargs)
        c, h, w = spec.observation_space.shape          # EnvPool: (frames, H, W) uint8
        self._frames = (c, h, w)
        self._observation_space = _Space((h, w, c))
        self._action_space = _Space(n=int(spec.action_space.n))
        self.max_steps = int(spec.config.max_episode_steps)
        self._pools: Dict[int, Any] = {}
        self._ids = itertools.count()

    # ---- host side -----------------------------------------------------------------------------------
    def _pool(self, pid: int, B: int):
        """Pool ``pid`` of B games, made and reset the first time it is asked for."""
        pool = self._pools.get(pid)
        if pool is None:
            pool = self._pools[pid] = self._make(B)
            pool.reset()
        return pool

    def _host_reset(self, pid, B):
        obs, _ = self._pool(int(pid), B).reset()
        return np.asarray(obs, np.uint8)

    def _host_step(self, pid, actions):
        obs, rew, term, trunc, _ = self._pool(int(pid), actions.shape[0]).step(np.asarray(actions, np.int32))
        return (np.asarray(obs, np.uint8), np.asarray(rew, np.float32), np.asarray(term, bool),
                np.asarray(trunc, bool))

    # ---- in the program ------------------------------------------------------------------------------
    def _images(self, frames):
        """(B, C, H, W) uint8 -> {agent: (B, H, W, C) float32 in [0, 1]}."""
        return {AGENT: jnp.transpose(frames, (0, 2, 3, 1)).astype(jnp.float32) / 255.0}

    def batch_reset(self, key, batch_size: int):
        """Reset a pool of ``batch_size`` games (a new pool number each time this is traced) -> (obs, state (B,)
        the pool's number)."""
        pid = jnp.int32(next(self._ids))
        frames = io_callback(lambda p: self._host_reset(p, batch_size),
                             jax.ShapeDtypeStruct((batch_size,) + self._frames, jnp.uint8), pid, ordered=True)
        return self._images(frames), jnp.full((batch_size,), pid, jnp.int32)

    def batch_step(self, key, states, actions: Dict[str, Any]):
        action = actions[AGENT]
        B = action.shape[0]
        shapes = (jax.ShapeDtypeStruct((B,) + self._frames, jnp.uint8), jax.ShapeDtypeStruct((B,), jnp.float32),
                  jax.ShapeDtypeStruct((B,), jnp.bool_), jax.ShapeDtypeStruct((B,), jnp.bool_))
        frames, reward, term, trunc = io_callback(self._host_step, shapes, states[0], action.astype(jnp.int32),
                                                  ordered=True)
        done = term | trunc
        return (self._images(frames), states, {AGENT: reward}, {AGENT: done, "__all__": done},
                {"truncated": trunc & ~term})

    def reset(self, key):
        raise NotImplementedError("EnvPool games are reset a batch at a time (batch_reset)")

    def step(self, key, state, actions):
        raise NotImplementedError("EnvPool games are stepped a batch at a time (batch_step)")
