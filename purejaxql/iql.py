"""IQL: independent Q-learners, each agent trained on its own reward.

Shapes: T time, Bs sampled sequences, N agents.

No mixer: Q_tot keeps the agent axis, Q_tot(o_t, a_t)_i = Q_i(o_{t,i}, a_{t,i}), and each agent learns from its
own reward r_{t,i}. With the replay loop's double-Q target (purejaxql.q_learning), one TD error per agent:
    δ_{t,i} = r_{t,i} + γ (1 - d_t) Q̄_i(o_{t+1}, argmax_{a ∈ avail} Q_i(o_{t+1}, a)) - Q_i(o_t, a_{t,i})
    L = mean_{t, b, i} δ²
where Q̄ is the target network and d_t marks the end of an episode.
"""
from __future__ import annotations

import jax

from purejaxql.decomposition import Mixer, QAlgorithm, Team


def independent(mixer_params, q: jax.Array, state: jax.Array, ctx=None) -> jax.Array:
    """q (..., N) -> (..., N): every agent's own value, unmixed."""
    return q


def make_mixer(cfg, team: Team) -> Mixer:
    return Mixer(init=lambda rng: {}, apply=independent)


IQL = QAlgorithm(name="iql", make_mixer=make_mixer, team_reward=False)
