"""Pure value-learning math, rlax style: unbatched functions, shapes checked at trace time.

Names follow rlax: ``q_tm1`` Q-values at time t-1 (the step being updated), ``a_tm1`` the action taken
there, ``r_t`` the reward that followed, ``discount_t`` = γ·(1 - done), ``q_t`` Q-values at time t.
Batch them with ``jax.vmap``. Unavailable actions are those with ``avail == 0``.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

__all__ = ["masked_argmax", "double_q_bootstrap", "double_q_td_error", "epsilon_greedy",
           "linear_schedule", "masked_mean", "lambda_returns"]


def masked_argmax(q: jax.Array, avail: jax.Array) -> jax.Array:
    """Index of the largest Q among available actions. q, avail: (A,) -> ()."""
    chex.assert_rank([q, avail], 1)
    chex.assert_equal_shape([q, avail])
    return jnp.argmax(jnp.where(avail > 0, q, -jnp.inf))


def double_q_bootstrap(q_t_value: jax.Array, q_t_selector: jax.Array, avail_t: jax.Array) -> jax.Array:
    """Double-Q next value: the selector (online) net picks argmax over available actions,
    the value (target) net values it. (A,), (A,), (A,) -> ()."""
    chex.assert_rank([q_t_value, q_t_selector, avail_t], 1)
    return q_t_value[masked_argmax(q_t_selector, avail_t)]


def double_q_td_error(q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array, discount_t: jax.Array,
                      q_t_value: jax.Array, q_t_selector: jax.Array, avail_t: jax.Array) -> jax.Array:
    """δ = r_t + discount_t · q_t_value[argmax_{a available} q_t_selector[a]] - q_tm1[a_tm1].

    The target is not differentiated through (stop_gradient). Shapes: q's (A,), the rest ().
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t], [1, 0, 0, 0])
    target = r_t + discount_t * double_q_bootstrap(q_t_value, q_t_selector, avail_t)
    return jax.lax.stop_gradient(target) - q_tm1[a_tm1]


def epsilon_greedy(key: jax.Array, q: jax.Array, avail: jax.Array, epsilon: jax.Array) -> jax.Array:
    """With probability ε a uniformly random *available* action, else the greedy available one.
    q, avail: (A,) -> () int32."""
    chex.assert_rank([q, avail, epsilon], [1, 1, 0])
    k_explore, k_action = jax.random.split(key)
    random_a = jax.random.categorical(k_action, jnp.where(avail > 0, 0.0, -jnp.inf))
    greedy_a = masked_argmax(q, avail)
    explore = jax.random.uniform(k_explore) < epsilon
    return jnp.where(explore, random_a, greedy_a).astype(jnp.int32)


def linear_schedule(start: float, finish: float, duration: float, t: jax.Array) -> jax.Array:
    """Linear anneal from ``start`` to ``finish`` over ``duration`` (units of t), then constant."""
    frac = jnp.clip(t / jnp.maximum(duration, 1e-8), 0.0, 1.0)
    return start + frac * (finish - start)


def masked_mean(x: jax.Array, mask=None) -> jax.Array:
    """Mean of x over the entries where mask is 1 (mask: x's leading axes; None = plain mean)."""
    if mask is None:
        return jnp.mean(x)
    mask = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def lambda_returns(r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array, lambda_) -> jax.Array:
    """λ-returns of one trajectory, computed backwards (T,), (T,), (T,), () or (T,) -> (T,):

        G_t = r_t + discount_t · ((1 - λ) v_t + λ G_{t+1}),   G_{T-1} = r_{T-1} + discount_{T-1} v_{T-1}

    ``v_t`` is the value of the state that follows step t (the bootstrap of step t); with
    v_t = max_a Q(s_{t+1}, a) these are Peng's Q(λ) targets. discount_t = γ (1 - done_t) cuts the
    return at episode ends inside the trajectory; λ = 0 gives one-step targets, λ = 1 Monte-Carlo
    returns bootstrapped only at the end of the trajectory. A per-step ``lambda_`` (T,) applies λ_t at
    step t (λ_t = 0: G_t bootstraps on v_t alone, e.g. when G_{t+1} is unknown).
    """
    chex.assert_rank([r_t, discount_t, v_t], 1)
    chex.assert_equal_shape([r_t, discount_t, v_t])
    lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, r_t.dtype), r_t.shape)

    def step(g_next, x):
        r, discount, v, lam = x
        g = r + discount * ((1.0 - lam) * v + lam * g_next)
        return g, g

    _, g = jax.lax.scan(step, v_t[-1], (r_t, discount_t, v_t, lambda_), reverse=True)
    return g
