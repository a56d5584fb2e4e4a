"""VDN: value decomposition by summation (Sunehag et al. 2018).

Shapes: T time, Bs sampled sequences, N agents.

Q_tot(o_t, a_t) = Σ_i Q_i(o_{t,i}, a_{t,i}), learnt from the team reward r_t = Σ_i r_{t,i}. With the replay
loop's double-Q target (purejaxql.q_learning):
    y_t = r_t + γ (1 - d_t) Σ_i Q̄_i(o_{t+1,i}, argmax_{a ∈ avail} Q_i(o_{t+1,i}, a))
    L = mean_{t, b} (y_t - Q_tot(o_t, a_t))²
"""
from __future__ import annotations

import jax

from purejaxql.decomposition import Mixer, QAlgorithm, Team


def vdn_mix(mixer_params, q: jax.Array, state: jax.Array, ctx=None) -> jax.Array:
    """q (..., N) -> Q_tot (...,): the sum of the agents' values (no parameters, no state)."""
    return q.sum(axis=-1)


def make_mixer(cfg, team: Team) -> Mixer:
    return Mixer(init=lambda rng: {}, apply=vdn_mix)


VDN = QAlgorithm(name="vdn", make_mixer=make_mixer)
