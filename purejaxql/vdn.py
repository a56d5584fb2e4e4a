"""VDN: value decomposition by summation (Sunehag et al. 2018).

Shapes: T time, Bs sampled sequences, N agents.

Q_tot(o_t, a_t) = Σ_i Q_i(o_{t,i}, a_{t,i}); team reward r_t = Σ_i r_{t,i} (``rewards["__all__"]``).
Loss (double Q-learning on Q_tot):
    y_t = r_t + γ (1 - d_t) Σ_i Q̄_i(o_{t+1,i}, argmax_{a ∈ avail} Q_i(o_{t+1,i}, a))
    L = mean_{t, b} (y_t - Q_tot(o_t, a_t))²
"""
from __future__ import annotations

import jax

from purejaxql.q_learning import QAlgorithm
from purejaxql.rl_math import masked_mean


def vdn_mix(q: jax.Array) -> jax.Array:
    """(..., N) -> (...,): Q_tot as the sum of agent Qs."""
    return q.sum(axis=-1)


def vdn_loss(cfg, mixer_params, mixer_target_params, q_taken, q_next, rewards, discount, states,
             mask=None):
    """q_taken, q_next, rewards: (T, Bs, N); discount, mask: (T, Bs)."""
    target = rewards.sum(-1) + discount * vdn_mix(q_next)          # (T, Bs)
    return masked_mean((jax.lax.stop_gradient(target) - vdn_mix(q_taken)) ** 2, mask)


VDN = QAlgorithm(name="vdn", loss=vdn_loss)
