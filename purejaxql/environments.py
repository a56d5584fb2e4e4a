"""The environment side: building an env by name (:func:`make_env`, from :mod:`purejaxql.env_registry`),
:class:`CTRolloutManager` (the batched, padded, centralised-training wrapper every algorithm uses) and
stepping a batch of envs while training (:class:`EnvCarry`, :func:`reset_envs`, :func:`step_envs`).
``from purejaxql.utils import CTRolloutManager`` keeps working (users import it from there).

:class:`CTRolloutManager` turns a plain JaxMARL ``MultiAgentEnv`` into a batch of ``batch_size``
environments for centralised training:
* ``obs["__all__"]``: the global state (the env's own ``world_state`` where it has one, as SMAX does,
  else the concatenation of the training agents' raw observations);
* ``rewards["__all__"]``: the sum of the training agents' rewards;
* every agent's observation flattened, zero-padded to the largest agent's length, then (``add_last_action``,
  pymarl's ``obs_last_action``) the one-hot of that agent's previous action, padded to ``max_action_space``
  and all zeros on the first step of every episode (after a reset and after every auto-reset), then
  (``add_agent_id``) a one-hot agent id (so agents of different shapes can share one network);
* action sets padded to the largest agent's; padded actions are marked unavailable;
* ``infos["won_episode"]`` on environments with a battle outcome (SMAX); ``infos["truncated"]`` (episode cut
  by the time limit) on envs that report it (``reports_truncation``: the gymnax adapter);
  ``infos["shaped_reward"]`` ({agent: reward}) on envs that pay one beside their own reward (Overcooked:
  :func:`reports_shaped_reward`; the loops add it with an annealed weight, REW_SHAPING_HORIZON).

Environments auto-reset inside ``step`` (JaxMARL semantics): after a step whose ``dones["__all__"]`` is
true, the returned observation is the first observation of the next episode.

A new environment family plugs in here: anything with JaxMARL's ``MultiAgentEnv`` interface (``agents``,
``reset``, ``step`` with auto-reset, ``observation_space`` / ``action_space`` per agent, optionally
``get_avail_actions``, ``max_steps`` and ``time_limit_truncates``) runs with every algorithm and variant;
:func:`make_env` (``purejaxql/env_registry.py``) is where a name becomes such an env.

Shapes: B = batch_size environments, N agents, D = ``obs_size``, A = ``max_action_space``, S = state size,
H agent hidden size.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.config import ConfigError
from purejaxql.env_registry import env_label, import_jaxmarl, make_env

__all__ = ["import_jaxmarl", "make_env", "env_label", "CTRolloutManager", "space_dim", "space_shape", "stack_agents",
           "unstack_agents", "time_limit_truncates", "reports_shaped_reward", "EnvCarry", "reset_envs",
           "step_envs"]


def space_dim(space) -> int:
    """Flat size of a Box/Discrete/MultiDiscrete space (number of actions for a Discrete one)."""
    if hasattr(space, "n"):
        return int(space.n)
    return int(np.prod(space.shape))


def space_shape(space) -> tuple:
    """A space's shape as a tuple (Hanabi's Box gives a bare integer; no shape: ())."""
    shape = getattr(space, "shape", None)
    return tuple(int(d) for d in np.atleast_1d(shape)) if shape is not None and np.size(shape) else ()


def time_limit_truncates(env) -> bool:
    """Does ``env`` end episodes at ``env.max_steps`` by a time limit rather than a terminal state?

    Then the last transition of such an episode is a truncation: its true next observation is lost in the
    auto-reset and its value is not zero (``TIMEOUT_AS_TERMINAL=None`` resolves to ``False`` for it). An
    env says so with a ``time_limit_truncates`` attribute; JaxMARL's MPE scenarios (every episode ends at
    the time limit) and SMAX (a battle not decided after max_steps) are known. Any other env's episode
    ends are taken as terminal states (the two-step game's last step is one)."""
    if env is None:
        return False
    declared = getattr(env, "time_limit_truncates", None)
    if declared is not None:
        return bool(declared)
    from jaxmarl.environments.mpe.simple import SimpleMPE
    from jaxmarl.environments.smax.heuristic_enemy_smax_env import EnemySMAX
    from jaxmarl.environments.smax.smax_env import SMAX
    return isinstance(getattr(env, "_env", env), (SimpleMPE, SMAX, EnemySMAX))


def stack_agents(x: Dict[str, jax.Array], agents: Sequence[str], axis: int = 1) -> jax.Array:
    """{agent: (B, ...)} -> (B, N, ...) in ``agents`` order (``axis`` picks where N goes)."""
    return jnp.stack([x[a] for a in agents], axis=axis)


def unstack_agents(x: jax.Array, agents: Sequence[str], axis: int = 1) -> Dict[str, jax.Array]:
    """(B, N, ...) -> {agent: (B, ...)}; the inverse of :func:`stack_agents`."""
    return {a: jnp.take(x, i, axis=axis) for i, a in enumerate(agents)}


class CTRolloutManager:
    """Batched, padded, centralised-training view of a JaxMARL environment.

    Args:
        env: a JaxMARL ``MultiAgentEnv`` with discrete action spaces.
        batch_size: number of environments stepped in parallel (B).
        training_agents: agents whose rewards make up ``rewards["__all__"]`` (default: all).
        preprocess_obs: flatten and zero-pad observations to one length (default True).
        add_agent_id: with ``preprocess_obs``, append the one-hot agent id (default True).
        add_last_action: with ``preprocess_obs``, append the one-hot of the agent's previous action before
            the agent id (default False). It needs no state of its own: the observation a step returns
            follows the actions that step took, unless the episode ended and the env auto-reset.
        add_state_last_action: append every agent's previous action (one-hot, padded action count, in
            agent order; zeros after a reset) to the global state ``obs["__all__"]`` (default False).
    """

    def __init__(self, env, batch_size: int, training_agents: Optional[Sequence[str]] = None,
                 preprocess_obs: bool = True, add_agent_id: bool = True, add_last_action: bool = False,
                 add_state_last_action: bool = False):
        self._env = env
        self.batch_size = int(batch_size)
        self.agents = list(env.agents)
        self.num_agents = len(self.agents)
        self.training_agents = list(self.agents if training_agents is None else training_agents)
        self.preprocess_obs = preprocess_obs
        self.add_agent_id = preprocess_obs and add_agent_id
        self.add_last_action = preprocess_obs and add_last_action
        self.add_state_last_action = add_state_last_action
        unknown = [a for a in self.training_agents if a not in self.agents]
        if unknown:
            raise ConfigError(f"training agent {unknown[0]!r} is not an agent of the env ({self.agents})")
        for a in self.agents:
            if not hasattr(env.action_space(a), "n"):
                raise ConfigError(
                    f"agent {a!r} of {getattr(env, 'name', type(env).__name__)} has a continuous action "
                    f"space ({type(env.action_space(a)).__name__}); Q-learning needs discrete actions")
        self.obs_dims = [space_dim(env.observation_space(a)) for a in self.agents]
        self.action_dims = [space_dim(env.action_space(a)) for a in self.agents]
        self.max_obs_length = max(self.obs_dims)
        self.max_action_space = max(self.action_dims)
        self.obs_size = (self.max_obs_length + (self.max_action_space if self.add_last_action else 0) +
                         (self.num_agents if self.add_agent_id else 0))
        self.agents_one_hot = {a: oh if self.add_agent_id else oh[:0]
                               for a, oh in zip(self.agents, jnp.eye(self.num_agents))}
        # (N, A) mask of the actions each agent really has (padded ones are 0)
        self.valid_actions_oh = jnp.asarray(
            [[1.0] * n + [0.0] * (self.max_action_space - n) for n in self.action_dims])
        # the env's own availability: get_avail_actions, or Hanabi's get_legal_moves (the base class's answer,
        # every action available, is left out: padded actions are masked below anyway)
        own_avail = getattr(type(env), "get_avail_actions", None)
        if own_avail is not None and own_avail is not _base_get_avail_actions():
            self._avail_fn = env.get_avail_actions
        else:
            self._avail_fn = getattr(env, "get_legal_moves", None)
        self._has_avail = self._avail_fn is not None
        self.has_won = hasattr(env, "won_battle_bonus")
        self.reports_truncation = bool(getattr(env, "reports_truncation", False))
        self._steps_batches = callable(getattr(env, "batch_step", None))
        self._resets_batches = callable(getattr(env, "batch_reset", None))
        self.max_steps = getattr(env, "max_steps", None)
        # global state size, found by tracing one reset
        obs_shape = jax.eval_shape(self.batch_reset if self._resets_batches else self.wrapped_reset,
                                   jax.random.PRNGKey(0))[0]
        self.state_size = int(obs_shape["__all__"].shape[-1])

    def __getattr__(self, name):
        # everything else (name, observation_space, max_steps, ...) comes from the wrapped env
        return getattr(self._env, name)

    # ---- single environment ------------------------------------------------------------------------
    def global_state(self, raw_obs: Dict[str, jax.Array], state) -> jax.Array:
        """(S,) float32 global state: the env's ``world_state`` if it has one, else the training agents' raw
        observations joined (Overcooked's uint8 images become floats)."""
        if "world_state" in raw_obs:
            return raw_obs["world_state"].ravel().astype(jnp.float32)
        return jnp.concatenate([raw_obs[a].ravel() for a in self.training_agents], axis=-1).astype(jnp.float32)

    def global_reward(self, rewards: Dict[str, jax.Array]) -> jax.Array:
        """Sum of the training agents' rewards."""
        return jnp.stack([rewards[a] for a in self.training_agents]).sum(axis=0)

    def _preprocess_obs(self, arr: jax.Array, last_action: jax.Array, agent_one_hot: jax.Array) -> jax.Array:
        arr = arr.ravel()
        arr = jnp.pad(arr, (0, self.max_obs_length - arr.shape[-1]))
        return jnp.concatenate([arr, last_action, agent_one_hot], axis=-1)

    def _wrap_obs(self, raw_obs, state, last_actions=None):
        """``last_actions``: {agent: (A,)} one-hot of the action that led to ``raw_obs`` (None: none, as
        after a reset, or neither last-action input is on)."""
        none = jnp.zeros((self.max_action_space,))
        last = {a: none if last_actions is None else last_actions[a] for a in self.agents}
        if self.preprocess_obs:
            obs = {a: self._preprocess_obs(raw_obs[a], last[a] if self.add_last_action else none[:0],
                                           self.agents_one_hot[a]) for a in self.agents}
        else:
            obs = {a: raw_obs[a] for a in self.agents}
        obs["__all__"] = self.global_state(raw_obs, state)
        if self.add_state_last_action:   # (S,) -> (S + N·A,)
            obs["__all__"] = jnp.concatenate([obs["__all__"]] + [last[a] for a in self.agents])
        return obs

    def wrapped_reset(self, key):
        raw_obs, state = self._env.reset(key)
        return self._wrap_obs(raw_obs, state), state

    def wrapped_step(self, key, state, actions):
        return self._wrap_step(actions, *self._env.step(key, state, actions))

    def _wrap_step(self, actions, raw_obs, state, rewards, dones, infos):
        """One env's raw step outputs -> the padded observations, team reward and infos the loops read."""
        last = None
        if self.add_last_action or self.add_state_last_action:  # after an auto-reset: no previous action
            keep = 1.0 - jnp.asarray(dones["__all__"], jnp.float32)
            last = {a: jax.nn.one_hot(actions[a], self.max_action_space) * keep for a in self.agents}
        obs = self._wrap_obs(raw_obs, state, last)
        rewards = {a: rewards[a] for a in self.agents}
        rewards["__all__"] = self.global_reward(rewards)
        # envs that say which episode ends are time limits (purejaxql.gymnax_env) pass that on
        raw_infos, infos = infos, ({"truncated": infos["truncated"]} if self.reports_truncation else {})
        if "shaped_reward" in raw_infos:  # Overcooked's shaping reward, per agent
            infos["shaped_reward"] = {a: raw_infos["shaped_reward"][a] for a in self.agents}
        if self.has_won:  # SMAX: a won battle pays the won bonus on its last step
            won_bonus = self._env.won_battle_bonus
            infos["won_episode"] = dones["__all__"] & jnp.any(
                jnp.stack([rewards[a] for a in self.agents]) >= won_bonus)
        return obs, state, rewards, dones, infos

    def avail_actions(self, state) -> Dict[str, jax.Array]:
        """{agent: (A,)} 0/1 availability, padded to ``max_action_space`` (unbatched state)."""
        if self._has_avail:
            avail = self._avail_fn(state)
            return {a: jnp.pad(jnp.asarray(avail[a], jnp.float32),
                               (0, self.max_action_space - avail[a].shape[-1]))
                    for a in self.agents}
        return {a: self.valid_actions_oh[i] for i, a in enumerate(self.agents)}

    # ---- batched -----------------------------------------------------------------------------------
    @partial(jax.jit, static_argnums=0)
    def batch_reset(self, key):
        if self._resets_batches:  # the env resets the whole batch itself (EnvPool's games)
            raw_obs, states = self._env.batch_reset(key, self.batch_size)
            return jax.vmap(self._wrap_obs)(raw_obs, states), states
        return jax.vmap(self.wrapped_reset)(jax.random.split(key, self.batch_size))

    @partial(jax.jit, static_argnums=0)
    def batch_step(self, key, states, actions):
        if self._steps_batches:  # the env steps the whole batch itself (Craftax's optimistic resets, EnvPool)
            return jax.vmap(self._wrap_step)(actions, *self._env.batch_step(key, states, actions))
        keys = jax.random.split(key, self.batch_size)
        return jax.vmap(self.wrapped_step)(keys, states, actions)

    def get_valid_actions(self, states) -> Dict[str, jax.Array]:
        """{agent: (B, A)} availability for a batch of states."""
        return jax.vmap(self.avail_actions)(states)

    def batch_sample(self, key, agent: str, avail: Optional[jax.Array] = None) -> jax.Array:
        """(B,) uniformly random actions of ``agent``, drawn only among its available ones."""
        if avail is None:
            avail = jnp.broadcast_to(self.valid_actions_oh[self.agents.index(agent)],
                                     (self.batch_size, self.max_action_space))
        logits = jnp.where(avail > 0, 0.0, -jnp.inf)
        return jax.random.categorical(key, logits, axis=-1)


def reports_shaped_reward(env) -> bool:
    """Whether ``env``'s step pays a shaped reward beside its own (``infos["shaped_reward"]``, Overcooked), found
    by tracing one reset and step (nothing runs). Envs that step their batch themselves pay none."""
    if callable(getattr(env, "batch_step", None)):
        return False

    def one_step(key):
        _, state = env.reset(key)
        return env.step(key, state, {a: jnp.int32(0) for a in env.agents})[4]
    return "shaped_reward" in jax.eval_shape(one_step, jax.random.PRNGKey(0))


def _base_get_avail_actions():
    from jaxmarl.environments.multi_agent_env import MultiAgentEnv
    return MultiAgentEnv.get_avail_actions


# ---- stepping a batch of envs while training ---------------------------------------------------------


class EnvCarry(NamedTuple):
    """What the acting side carries between steps, and between updates (episodes are never cut)."""
    env_state: object
    obs: jax.Array         # (B, N, D) current observation
    state: jax.Array       # (B, S) current global state
    first: jax.Array       # (B,) bool: obs starts an episode (reset the RNN before using it)
    avail: jax.Array       # (B, N, A) available actions at obs
    hidden: jax.Array      # (B, N, H) agent hidden state before obs (before the reset of `first`)
    ep_return: jax.Array   # (B, N) reward summed since the episode started
    ep_len: jax.Array      # (B,) steps taken since the episode started


def reset_envs(env: "CTRolloutManager", rng: jax.Array, hidden: jax.Array) -> EnvCarry:
    obs_d, env_state = env.batch_reset(rng)
    return EnvCarry(env_state=env_state,
                    obs=stack_agents(obs_d, env.agents),
                    state=obs_d["__all__"],
                    first=jnp.ones((env.batch_size,), bool),
                    avail=stack_agents(env.get_valid_actions(env_state), env.agents),
                    hidden=hidden,
                    ep_return=jnp.zeros((env.batch_size, env.num_agents)),
                    ep_len=jnp.zeros((env.batch_size,), jnp.int32))


def step_envs(env: "CTRolloutManager", rng: jax.Array, carry: EnvCarry, actions: jax.Array,
              hidden: jax.Array, shaping_weight=None):
    """Step every env with ``actions`` (B, N). Returns the new carry and the step's outputs:
    rewards (B, N), done (B,), each agent's return of the episode so far (B, N) (the finished
    episode's where done), won (B,), timeout (B,): the episode ended by reaching ``env.max_steps``
    steps (a time limit), and shaped (B, N): the env's shaped reward (zeros without ``shaping_weight``).
    With ``shaping_weight`` (a scalar: REW_SHAPING_HORIZON's annealed weight) the rewards are the env's own
    plus ``shaping_weight`` × shaped (what the loss learns from); the returns count the env's own only."""
    obs_d, env_state, rew_d, done_d, infos = env.batch_step(
        rng, carry.env_state, unstack_agents(actions, env.agents))
    rewards = stack_agents(rew_d, env.agents)   # (B, N)
    done = done_d["__all__"]                   # (B,)
    ep_return = carry.ep_return + rewards
    won = infos.get("won_episode", jnp.zeros_like(done))
    ep_len = carry.ep_len + 1
    if "truncated" in infos:  # the env says which episode ends are time limits
        timeout = done & infos["truncated"]
    else:
        timeout = done & (ep_len >= (env.max_steps or jnp.iinfo(jnp.int32).max))
    shaped = jnp.zeros_like(rewards)
    if shaping_weight is not None:
        shaped = stack_agents(infos["shaped_reward"], env.agents).astype(rewards.dtype)  # (B, N)
        rewards = rewards + shaping_weight * shaped
    new = EnvCarry(env_state=env_state,
                   obs=stack_agents(obs_d, env.agents),
                   state=obs_d["__all__"],
                   first=done,
                   avail=stack_agents(env.get_valid_actions(env_state), env.agents),
                   hidden=hidden,
                   ep_return=jnp.where(done[:, None], 0.0, ep_return),
                   ep_len=jnp.where(done, 0, ep_len))
    return new, (rewards, done, ep_return, won, timeout, shaped)
