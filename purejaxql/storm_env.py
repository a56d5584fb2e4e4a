"""JaxMARL's STORM games (``storm``, ``storm_2p``, ``storm_np``: spatial-temporal representations of matrix
games, Khan et al. 2023) behind the per-agent interface the rollout wrapper takes.

STORM's three versions lay out their observations, rewards and dones differently, none keyed by agent name:

* ``storm`` (InTheGrid, N players): ``{"observations": (N, H, W, C), "inventory": (5, N)}`` (agent i's column:
  red and blue coins held, can interact, and the two counts it shows), rewards (N,), dones ``{"__all__"}``;
* ``storm_2p`` (InTheGrid_2p): a tuple of per-agent ``{"observation": (H, W, C), "inventory": (6,)}``, a tuple of
  rewards, dones ``{"__all__"}``;
* ``storm_np`` (InTheMatrix): an (N, H, W, C) image array, rewards (N,), dones per agent.

:class:`StormTeam` gives every version agents ``agent_0 .. agent_{N-1}`` observing one float image each,
(H, W, C + K): the grid view with the agent's K inventory features appended as constant planes (K = 0 for
``storm_np``), so convolutional agents (``AGENT_TYPE=cnn``) read both and feed-forward ones see them flattened.
Actions arrive as ``{agent_i: a}`` and go to the game as an (N,) array. Rewards come back per agent (the team
reward is their sum, as for Coin Game). An episode is ``num_outer_steps`` games of ``num_inner_steps`` steps
(``max_steps`` = their product; the games inside restart on their own) and always ends at that horizon, which
no observation shows: it is a time limit like MPE's, reported as ``infos["truncated"]`` so the last step
bootstraps (TIMEOUT_AS_TERMINAL=False by default)."""
from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp

__all__ = ["STORM_NAMES", "StormTeam"]

STORM_NAMES = ("storm", "storm_2p", "storm_np")


class StormTeam:
    """One STORM game (built by ``jaxmarl.make(name, **kwargs)``) as a JaxMARL-style env keyed by agent."""

    time_limit_truncates = True   # every episode ends at the horizon (max_steps)
    reports_truncation = True     # ... and says so in infos["truncated"]

    def __init__(self, name: str, env):
        self.name = name
        self._env = env
        self.num_agents = int(env.num_agents)
        self.agents = [f"agent_{i}" for i in range(self.num_agents)]
        self._inner = list(env.agents)              # the game's own agent keys (0, 1, ...)
        self.max_steps = int(env.num_inner_steps) * int(env.num_outer_steps)
        obs = jax.eval_shape(lambda k: self._per_agent(env.reset(k)[0]), jax.random.PRNGKey(0))
        self._obs_shape = tuple(obs[0].shape)
        from jaxmarl.environments.spaces import Box   # (jaxmarl is imported by now: it built env)
        self._observation_space = Box(0.0, float("inf"), self._obs_shape, jnp.float32)

    def observation_space(self, agent: str):
        return self._observation_space

    def action_space(self, agent: str):
        return self._env.action_space(self._inner[self.agents.index(agent)])

    def _per_agent(self, raw) -> list:
        """The game's observation -> one (H, W, C + K) float image per agent (inventory as constant planes)."""
        if isinstance(raw, (tuple, list)):                       # storm_2p: per-agent dicts
            images = [o["observation"] for o in raw]
            inventories = [o["inventory"] for o in raw]
        elif isinstance(raw, dict):                              # storm: stacked images, inventory (K, N)
            images = list(raw["observations"])
            inventories = list(jnp.asarray(raw["inventory"]).T)
        else:                                                    # storm_np: stacked images only
            images, inventories = list(raw), [jnp.zeros((0,))] * self.num_agents
        out = []
        for img, inv in zip(images, inventories):
            img = jnp.asarray(img, jnp.float32)
            planes = jnp.broadcast_to(jnp.asarray(inv, jnp.float32), img.shape[:2] + (inv.shape[-1],))
            out.append(jnp.concatenate([img, planes], axis=-1))
        return out

    def _obs(self, raw) -> Dict[str, jax.Array]:
        return dict(zip(self.agents, self._per_agent(raw)))

    def reset(self, key):
        raw, state = self._env.reset(key)
        return self._obs(raw), state

    def step(self, key, state, actions: Dict[str, Any]):
        arr = jnp.stack([jnp.asarray(actions[a]) for a in self.agents])
        raw, state, rewards, dones, _ = self._env.step(key, state, arr)
        rewards = {a: jnp.asarray(rewards[i], jnp.float32) for i, a in enumerate(self.agents)}
        done = jnp.asarray(dones["__all__"])
        dones = {**{a: done for a in self.agents}, "__all__": done}
        return self._obs(raw), state, rewards, dones, {"truncated": done}

