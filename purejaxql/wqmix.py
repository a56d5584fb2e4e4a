"""Weighted QMIX: OW-QMIX and CW-QMIX (Rashid et al. 2020, "Weighted QMIX: Expanding Monotonic Value
Function Factorisation for Deep Multi-Agent Reinforcement Learning").

Shapes: T time, Bs sampled sequences, N agents, S global state size, C = WQMIX_CENTRAL_MIXER_DIM.

QMIX projects the joint values onto monotonic functions giving every joint action the same weight, and
can miss the best joint action (the matrix game in tests/test_mixers.py). Weighted QMIX learns,
beside the QMIX agents and mixer Q_tot (the monotonic part, used to act), an unrestricted estimate Q̂* of
the joint values: central agent networks Q^c_i of the same architecture as the agents but parameters of
their own (purejaxql.q_learning's ``central_agents``), mixed by a feed-forward network of the state
    Q̂*(s, u) = MLP_C([Q^c_1(τ_1, u_1), ..., Q^c_N(τ_N, u_N), s]) + V(s)   (3 ReLU layers of C, no sign constraint)
Both learn from the target Q̂* at the monotonic part's greedy joint action (double Q as in the rest of the
library: the online agents pick, the target central networks value):
    û_{t+1,i} = argmax_{a ∈ avail} Q_i(τ_{t+1,i}, a)
    y_t = r_t + γ (1 - d_t) Q̂*_target(s_{t+1}, û_{t+1})                    (or TD(λ) returns on these values)
    L = mean_{t, b} [ w_t (y_t - Q_tot(s_t, u_t))² + (y_t - Q̂*(s_t, u_t))² ]
with the weighting w_t ∈ {α, 1}, α = WQMIX_ALPHA:
    OW-QMIX (optimistic):  w_t = 1 where Q_tot(s_t, u_t) < y_t, else α
    CW-QMIX (central):     w_t = 1 where y_t > Q̂*(s_t, û_t) or u_t = û_t (the greedy joint action), else α
(Q̂*(s_t, û_t) from the target central networks, as the authors' code). α < 1 puts less weight on joint
actions the targets say are worse, so Q_tot can rank the best joint action first.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant

from purejaxql.evaluation import greedy_actions
from purejaxql.networks import orthogonal
from purejaxql.decomposition import Mixer, QAlgorithm, Team, Transitions, double_q_inputs, td_targets
from purejaxql.qmix import QMixer


class CentralMixer(nn.Module):
    """Q̂*: q (..., N), s (..., S) -> (...), a feed-forward network with no monotonicity constraint."""
    hidden_dim: int

    @nn.compact
    def __call__(self, q, s):
        def dense(n):
            return nn.Dense(n, kernel_init=orthogonal(), bias_init=constant(0.0))
        x = jnp.concatenate([q, s], axis=-1)
        for _ in range(3):
            x = nn.relu(dense(self.hidden_dim)(x))
        v = dense(1)(nn.relu(dense(self.hidden_dim)(s)))
        return (dense(1)(x) + v)[..., 0]


def _take(q, actions):
    """q (..., N, A), actions (..., N) -> (..., N)."""
    return jnp.take_along_axis(q, actions[..., None], axis=-1)[..., 0]


def make_mixer(cfg, team: Team) -> Mixer:
    """Params {"qmix": the monotonic mixer, "central": Q̂*'s mixer}; ``apply`` is the monotonic Q_tot."""
    qmix = QMixer(team.num_agents, cfg["MIXER_EMBEDDING_DIM"], cfg["MIXER_HYPERNET_HIDDEN_DIM"], cfg["MIXER_INIT_SCALE"])
    central = CentralMixer(cfg["WQMIX_CENTRAL_MIXER_DIM"])

    def init(rng):
        k1, k2 = jax.random.split(rng)
        q, s = jnp.zeros((team.num_agents,)), jnp.zeros((team.state_size,))
        return {"qmix": qmix.init(k1, q, s), "central": central.init(k2, q, s)}
    return Mixer(init=init, apply=lambda params, q, state, ctx=None: qmix.apply(params["qmix"], q, state))


def weighted_loss(weighting: str):
    """The loss of OW-QMIX (``weighting="ow"``) or CW-QMIX (``"cw"``), see the module docstring."""
    def make_loss(cfg, mixer: Mixer):
        central = CentralMixer(cfg["WQMIX_CENTRAL_MIXER_DIM"])
        alpha = cfg["WQMIX_ALPHA"]

        def loss(params, target_params, x: Transitions):
            q_taken, _, ctx, next_ctx = double_q_inputs(x)                            # (T, Bs, N)
            star_next = _take(jax.lax.stop_gradient(x.central_q_target[1:]), next_ctx.actions)
            v = central.apply(target_params["mixer"]["central"], star_next, x.state[1:])   # (T, Bs)
            y = td_targets(True, v, x.rewards, x.discount, x.lambda_t)
            q_tot = mixer.apply(params["mixer"], q_taken, x.state[:-1])
            q_star = central.apply(params["mixer"]["central"], _take(x.central_q[:-1], x.actions), x.state[:-1])
            if weighting == "ow":
                full = q_tot < y
            else:
                greedy = greedy_actions(jax.lax.stop_gradient(x.q[:-1]), x.avail[:-1])  # û_t (T, Bs, N)
                star_greedy = central.apply(target_params["mixer"]["central"],
                                            _take(jax.lax.stop_gradient(x.central_q_target[:-1]), greedy), x.state[:-1])
                full = (y > star_greedy) | jnp.all(x.actions == greedy, axis=-1)
            w = jnp.where(full, 1.0, alpha)
            delta = y - q_tot
            return w * delta ** 2 + (y - q_star) ** 2, delta
        return loss
    return make_loss


OW_QMIX = QAlgorithm(name="owqmix", make_mixer=make_mixer, uses_state=True, central_agents=True,
                     make_loss=weighted_loss("ow"))
CW_QMIX = QAlgorithm(name="cwqmix", make_mixer=make_mixer, uses_state=True, central_agents=True,
                     make_loss=weighted_loss("cw"))
