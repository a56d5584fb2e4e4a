"""What a value decomposition plugs into the replay loop (:mod:`purejaxql.q_learning`), and the double-Q TD
loss every replay algorithm is trained with.

    q_taken_t = Q_i(o_t, a_t),    q_next_t = Q̄_i(o_{t+1}, argmax_{a ∈ avail} Q_i(o_{t+1}, a))   (double Q)
    V_t = Mix̄(q_next_t, s_{t+1})                         r_t: team reward Σ_i r_{t,i}, or each agent's own
    y_t = r_t + γ (1 - d_t) V_t                                         (TD_LAMBDA = 0: 1-step targets)
    y_t = r_t + γ (1 - d_t) ((1 - λ_t) V_t + λ_t y_{t+1}),  y_{T-1} = r_{T-1} + γ (1 - d_{T-1}) V_{T-1}  (TD(λ))
    δ_t = y_t - Mix(q_taken_t, s_t)

with Q̄ / Mix̄ the target network's agents / mixer and d_t the end of an episode. An algorithm (``iql.py``,
``vdn.py``, ``qmix.py``, ...) is a :class:`QAlgorithm`: its :class:`Mixer` and whether it learns from the team
reward or each agent's own.

Shape legend: T steps of a sampled sequence, Bs sequences, N agents that learn, A actions (padded),
D observation size, S global state size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple

import chex
import jax
import jax.numpy as jnp

from purejaxql.evaluation import greedy_actions
from purejaxql.rl_math import lambda_returns, masked_mean


class AgentContext(NamedTuple):
    """What a mixer may read besides the agents' values q (..., N) it mixes (QPLEX's advantages, Qatten's
    agent features); the simple mixers ignore it. Leading axes (...) = (T, Bs) in the loss."""
    greedy: jax.Array   # (..., N) max_{a ∈ avail} Q_i(τ_i, a) (V_i), no gradient; the target side: = q
    actions: jax.Array  # (..., N) int: the actions the values q belong to
    obs: jax.Array      # (..., N, D) each agent's observation (its own features)


class Team(NamedTuple):
    """The sizes a mixer is built for."""
    num_agents: int   # N (the agents that learn)
    state_size: int   # S
    num_actions: int  # A (padded)
    obs_size: int     # D


class Mixer(NamedTuple):
    """A value decomposition's mixer, for N agents and global states of size S."""
    init: Callable[[jax.Array], Any]                    # rng -> mixer params ({} when it has none)
    apply: Callable[[Any, jax.Array, jax.Array, AgentContext], jax.Array]
    # (params, q (..., N), state (..., S), context) -> Q_tot (...) for a team value, (..., N) for independent ones


class Transitions(NamedTuple):
    """What a loss reads: one batch of sampled sequences, time-major (T+1 observation steps, T actions)."""
    q: jax.Array                # (T+1, Bs, N, A) online agents' Q-values
    q_next_target: jax.Array    # (T, Bs, N, A) target agents' Q-values at t+1
    actions: jax.Array          # (T, Bs, N)
    avail: jax.Array            # (T+1, Bs, N, A)
    obs: jax.Array              # (T+1, Bs, N, D)
    state: jax.Array            # (T+1, Bs, S)
    rewards: jax.Array          # (T, Bs, N) per-agent rewards, scaled (REW_SCALE) and standardised (REW_NORM)
    discount: jax.Array         # (T, Bs) γ (1 - d_t)
    lambda_t: Any               # (T, Bs) TD(λ)'s λ_t, or None for 1-step targets
    central_q: Any = None       # (T+1, Bs, N, A) the central agents' values (QAlgorithm.central_agents)
    central_q_target: Any = None


@dataclass(frozen=True)
class QAlgorithm:
    """What distinguishes IQL, VDN, QMIX, QPLEX, ...: ``make_mixer(cfg, Team) -> Mixer``, whether the mixed value
    learns from the team reward Σ_i r_i (``team_reward``; else Q_tot keeps the agent axis and each agent
    learns from its own reward) and whether the mixer reads the global state (``uses_state``; replay stores
    it only then). Weighted QMIX adds a second, unrestricted estimate Q̂* with agent networks of its own
    (``central_agents``: the loop unrolls them beside the agents, online and target, and hands their values
    to the loss) and its own loss (``make_loss(cfg, mixer) -> loss(params, target_params, Transitions) ->
    (squared errors, TD errors)``, both (T, Bs); None: :func:`td_errors` squared)."""
    name: str
    make_mixer: Callable[[Dict[str, Any], Team], Mixer]
    team_reward: bool = True
    uses_state: bool = False
    central_agents: bool = False
    make_loss: Any = None


def td_targets(team_reward: bool, v: jax.Array, rewards: jax.Array, discount: jax.Array, lambda_t=None) -> jax.Array:
    """The TD targets y_t (this module's docstring) from the bootstrap values ``v`` (T, Bs) of a team value,
    (T, Bs, N) of independent ones; rewards (T, Bs, N) (summed over agents for a team value); discount and
    lambda_t (T, Bs) (lambda_t None: 1-step targets). No gradient flows through them."""
    if team_reward:  # one value for the team: (T, Bs)
        rewards = rewards.sum(-1)
    else:            # independent values: (T, Bs, N), one target per agent
        discount = discount[..., None]
        lambda_t = None if lambda_t is None else lambda_t[..., None]
    if lambda_t is None:
        target = rewards + discount * v
    else:  # λ-returns backwards along time, one column per sequence (and agent)
        columns = [jnp.broadcast_to(x, v.shape).reshape(v.shape[0], -1) for x in (rewards, discount, v, lambda_t)]
        target = jax.vmap(lambda_returns, in_axes=1, out_axes=1)(*columns).reshape(v.shape)
    return jax.lax.stop_gradient(target)


def td_errors(team_reward: bool, mix: Callable, mixer_params, target_mixer_params, q_taken: jax.Array,
              q_next: jax.Array, rewards: jax.Array, discount: jax.Array, state: jax.Array, lambda_t=None,
              ctx: AgentContext = None, next_ctx: AgentContext = None) -> jax.Array:
    """δ_t = y_t - Mix(q_taken_t, s_t) of every replay algorithm (this module's docstring): q_taken, q_next
    (double-Q bootstrap values), rewards (T, Bs, N); discount, lambda_t (T, Bs) (lambda_t None: 1-step
    targets, else TD(λ) with λ_t per step); state (T+1, Bs, S); ``ctx`` / ``next_ctx`` what mixers that read
    more than the values get at t and t+1. ``mix`` is the algorithm's ``Mixer.apply``, with the online
    mixer's parameters on q_taken and the target mixer's on q_next; with ``team_reward`` the mixed value
    learns from Σ_i r_i, otherwise (IQL) each agent's value from its own reward. -> (T, Bs) or (T, Bs, N)."""
    chex.assert_equal_shape([q_taken, q_next, rewards])
    chex.assert_equal_shape([discount, q_taken[..., 0]])
    q_tot = mix(mixer_params, q_taken, state[:-1], ctx)
    v = mix(target_mixer_params, q_next, state[1:], next_ctx)
    return td_targets(team_reward, v, rewards, discount, lambda_t) - q_tot


def td_loss(team_reward: bool, mix: Callable, mixer_params, target_mixer_params, q_taken: jax.Array,
            q_next: jax.Array, rewards: jax.Array, discount: jax.Array, state: jax.Array, mask=None,
            lambda_t=None, ctx: AgentContext = None, next_ctx: AgentContext = None) -> jax.Array:
    """L = mean of δ² over the steps of ``mask`` (T, Bs) (None: every step); δ from :func:`td_errors`."""
    delta = td_errors(team_reward, mix, mixer_params, target_mixer_params, q_taken, q_next, rewards, discount,
                      state, lambda_t, ctx, next_ctx)
    return masked_mean(delta ** 2, mask)


def double_q_inputs(x: Transitions):
    """From a batch: q_taken = Q_i(o_t, u_t) (T, Bs, N), q_next = Q̄_i(o_{t+1}, argmax_{a ∈ avail} Q_i(o_{t+1}, a))
    (T, Bs, N) (double Q, no gradient) and what mixers read besides at t and t+1 (:class:`AgentContext`)."""
    q_taken = jnp.take_along_axis(x.q[:-1], x.actions[..., None], axis=-1)[..., 0]
    q_online = jax.lax.stop_gradient(x.q)
    greedy = greedy_actions(q_online, x.avail)                                         # (T+1, Bs, N)
    q_next = jnp.take_along_axis(jax.lax.stop_gradient(x.q_next_target), greedy[1:, ..., None], axis=-1)[..., 0]
    v_online = jnp.take_along_axis(q_online[:-1], greedy[:-1, ..., None], axis=-1)[..., 0]
    ctx = AgentContext(greedy=v_online, actions=x.actions, obs=x.obs[:-1])
    next_ctx = AgentContext(greedy=q_next, actions=greedy[1:], obs=x.obs[1:])
    return q_taken, q_next, ctx, next_ctx


def standard_loss(algorithm: QAlgorithm, mixer: Mixer):
    """The double-Q TD loss of the module docstring: (params, target params, Transitions) -> (δ², δ)."""
    def loss(params, target_params, x: Transitions):
        q_taken, q_next, ctx, next_ctx = double_q_inputs(x)
        delta = td_errors(algorithm.team_reward, mixer.apply, params["mixer"], target_params["mixer"], q_taken,
                          q_next, x.rewards, x.discount, x.state, x.lambda_t, ctx, next_ctx)
        return delta ** 2, delta
    return loss
