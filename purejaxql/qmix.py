"""QMIX: monotonic value factorisation (Rashid et al. 2018).

Shapes: T time, Bs sampled sequences, N agents, S global state size, E = MIXER_EMBEDDING_DIM.

The mixer combines agent Qs into Q_tot with weights produced by hypernetworks of the global state
s = ``obs["__all__"]``; absolute values make every weight non-negative, so ∂Q_tot/∂Q_i ≥ 0:
    h     = ELU(q W1(s) + b1(s)),    W1(s) = |hyper_w1(s)| ∈ R^{N×E},  b1(s) ∈ R^E
    Q_tot = h W2(s) + V(s),          W2(s) = |hyper_w2(s)| ∈ R^{E×1},  V(s) a 2-layer MLP
Loss (double Q-learning through the target mixer, team reward r_t = Σ_i r_{t,i}):
    y_t = r_t + γ (1 - d_t) Mix̄(Q̄_i(o_{t+1,i}, argmax_{a ∈ avail} Q_i(o_{t+1,i}, a)), s_{t+1})
    L = mean_{t, b} (y_t - Mix(Q_i(o_{t,i}, a_{t,i}), s_t))²
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant

from purejaxql.config import QMIX_DEFAULTS
from purejaxql.networks import orthogonal
from purejaxql.q_learning import QAlgorithm
from purejaxql.rl_math import masked_mean



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


def make_mixer(cfg, num_agents: int) -> QMixer:
    return QMixer(num_agents, cfg["MIXER_EMBEDDING_DIM"], cfg["MIXER_HYPERNET_HIDDEN_DIM"],
                  cfg["MIXER_INIT_SCALE"])


def init_mixer(rng, cfg, num_agents: int, state_size: int):
    return make_mixer(cfg, num_agents).init(rng, jnp.zeros((num_agents,)), jnp.zeros((state_size,)))


def qmix_loss(cfg, mixer_params, mixer_target_params, q_taken, q_next, rewards, discount, states,
              mask=None):
    """q_taken, q_next, rewards: (T, Bs, N); discount, mask: (T, Bs); states: (T+1, Bs, S)."""
    mixer = make_mixer(cfg, q_taken.shape[-1])
    q_tot = mixer.apply(mixer_params, q_taken, states[:-1])                       # (T, Bs)
    q_tot_next = mixer.apply(mixer_target_params, q_next, states[1:])             # (T, Bs)
    target = rewards.sum(-1) + discount * q_tot_next
    return masked_mean((jax.lax.stop_gradient(target) - q_tot) ** 2, mask)


QMIX = QAlgorithm(name="qmix", loss=qmix_loss, init_mixer=init_mixer, defaults=QMIX_DEFAULTS,
                  uses_state=True)
