"""IQL: independent Q-learners, each agent trained on its own reward.

Shapes: T time, Bs sampled sequences, N agents.

Loss (double Q-learning, one TD error per agent):
    δ_{t,i} = r_{t,i} + γ (1 - d_t) Q̄_i(o_{t+1}, argmax_{a ∈ avail} Q_i(o_{t+1}, a)) - Q_i(o_t, a_{t,i})
    L = mean_{t, b, i} δ²
where Q̄ is the target network and d_t marks the end of an episode.
"""
from __future__ import annotations

import jax

from purejaxql.q_learning import QAlgorithm
from purejaxql.rl_math import masked_mean


def iql_loss(cfg, mixer_params, mixer_target_params, q_taken, q_next, rewards, discount, states,
             mask=None):
    """q_taken, q_next, rewards: (T, Bs, N); discount, mask: (T, Bs). No mixer, no state."""
    target = rewards + discount[..., None] * q_next
    return masked_mean((jax.lax.stop_gradient(target) - q_taken) ** 2, mask)


# Independent learners are also used in competitive games, where a team sum means little: log every
# agent's and every team's returns by default.
IQL = QAlgorithm(name="iql", loss=iql_loss, defaults={"LOG_AGENTS_SEPARATELY": True})
