"""QMIX: monotonic value factorisation (Rashid et al. 2018).

Shapes: T time, Bs sampled sequences, N agents, S global state size, E = MIXER_EMBEDDING_DIM.

The mixer combines agent Qs into Q_tot with weights produced by hypernetworks of the global state
s = ``obs["__all__"]``; absolute values make every weight non-negative, so ∂Q_tot/∂Q_i ≥ 0:
    h     = ELU(q W1(s) + b1(s)),    W1(s) = |hyper_w1(s)| ∈ R^{N×E},  b1(s) ∈ R^E
    Q_tot = h W2(s) + V(s),          W2(s) = |hyper_w2(s)| ∈ R^{E×1},  V(s) a 2-layer MLP
Learnt from the team reward r_t = Σ_i r_{t,i} with the replay loop's double-Q target through the target
mixer (purejaxql.decomposition):
    y_t = r_t + γ (1 - d_t) Mix̄(Q̄_i(o_{t+1,i}, argmax_{a ∈ avail} Q_i(o_{t+1,i}, a)), s_{t+1})
    L = mean_{t, b} (y_t - Mix(Q_i(o_{t,i}, a_{t,i}), s_t))²
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax.linen.initializers import constant

from purejaxql.networks import orthogonal
from purejaxql.decomposition import Mixer, QAlgorithm, Team


class HyperNetwork(nn.Module):
    """s -> Dense(hidden) -> ReLU -> Dense(out)."""
    hidden_dim: int
    output_dim: int
    init_scale: float

    @nn.compact
    def __call__(self, s):
        x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=orthogonal(), bias_init=constant(0.0))(s))
        return nn.Dense(self.output_dim, kernel_init=orthogonal(self.init_scale),
                        bias_init=constant(0.0))(x)


class QMixer(nn.Module):
    """Monotonic mixer: q (..., N), s (..., S) -> Q_tot (...,)."""
    num_agents: int
    embedding_dim: int
    hypernet_hidden_dim: int
    init_scale: float

    @nn.compact
    def __call__(self, q, s):
        N, E = self.num_agents, self.embedding_dim
        w1 = jnp.abs(HyperNetwork(self.hypernet_hidden_dim, N * E, self.init_scale)(s))
        w1 = w1.reshape(*s.shape[:-1], N, E)                                   # (..., N, E)
        b1 = nn.Dense(E, kernel_init=orthogonal(self.init_scale), bias_init=constant(0.0))(s)
        w2 = jnp.abs(HyperNetwork(self.hypernet_hidden_dim, E, self.init_scale)(s))  # (..., E)
        v = HyperNetwork(E, 1, self.init_scale)(s)[..., 0]                     # (...,)
        h = nn.elu(jnp.einsum("...n,...ne->...e", q, w1) + b1)                 # (..., E)
        return jnp.sum(h * w2, axis=-1) + v


def make_mixer(cfg, team: Team) -> Mixer:
    """The QMIX mixer of MIXER_EMBEDDING_DIM / MIXER_HYPERNET_HIDDEN_DIM / MIXER_INIT_SCALE: params from
    ``init(rng)``; ``apply(params, q (..., N), state (..., S)) -> Q_tot (...)``."""
    net = QMixer(team.num_agents, cfg["MIXER_EMBEDDING_DIM"], cfg["MIXER_HYPERNET_HIDDEN_DIM"], cfg["MIXER_INIT_SCALE"])
    return Mixer(init=lambda rng: net.init(rng, jnp.zeros((team.num_agents,)), jnp.zeros((team.state_size,))),
                 apply=lambda params, q, state, ctx=None: net.apply(params, q, state))


QMIX = QAlgorithm(name="qmix", make_mixer=make_mixer, uses_state=True)
