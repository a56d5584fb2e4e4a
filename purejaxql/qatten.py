"""Qatten: a multi-head attention mixer (Yang et al. 2020, "Qatten: A General Framework for Cooperative
Multiagent Reinforcement Learning").

Shapes: T time, Bs sampled sequences, N agents, D observation size, S global state size,
K = QATTEN_NUM_HEADS heads, E = MIXER_EMBEDDING_DIM (attention width), H = MIXER_HYPERNET_HIDDEN_DIM.

Q_tot is a state-dependent positive combination of the agents' values: in each head h the state queries
the agents, and a softmax over agents weighs their Q_i:
    λ_{i,h} = softmax_i( (W_q,h(s) · W_k,h e_i) / √E ),      e_i: agent i's own features
    Q_tot   = Σ_h w_h(s) Σ_i λ_{i,h} Q_i + c(s),               w_h(s) = |MLP_h(s)| ≥ 0
with W_q,h(s) a 2-layer MLP of the state, W_k,h linear, c(s) a 2-layer MLP. Every λ_{i,h} ≥ 0 and
w_h ≥ 0, so ∂Q_tot/∂Q_i ≥ 0: monotonic like QMIX (tested with the jacobian). The paper's e_i are the
agents' unit features taken from the state; environments differ in how (and whether) the state splits by
agent, so here e_i is agent i's observation (its own features, with its one-hot id when OBS_AGENT_ID).
The paper's regulariser on the attention logits is left out.

Learnt from the team reward with the replay loop's double-Q target through the target mixer (purejaxql.decomposition):
    y_t = r_t + γ (1 - d_t) Mix̄(Q̄_i(o_{t+1,i}, argmax_{a ∈ avail} Q_i(o_{t+1,i}, a)), s_{t+1}, o_{t+1})
    L = mean_{t, b} (y_t - Mix(Q_i(o_{t,i}, u_{t,i}), s_t, o_t))²
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant

from purejaxql.networks import orthogonal
from purejaxql.decomposition import AgentContext, Mixer, QAlgorithm, Team


class QattenMixer(nn.Module):
    """q (..., N), agent features e (..., N, D), s (..., S) -> Q_tot (...)."""
    num_heads: int
    embedding_dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, q, e, s):
        K, E, H = self.num_heads, self.embedding_dim, self.hidden_dim

        def dense(n, name=None):
            return nn.Dense(n, kernel_init=orthogonal(), bias_init=constant(0.0), name=name)
        query = dense(K * E, "query_out")(nn.relu(dense(H, "query_hidden")(s)))      # (..., K*E)
        query = query.reshape(*s.shape[:-1], K, E)
        keys = nn.Dense(K * E, use_bias=False, kernel_init=orthogonal(), name="keys")(e)
        keys = keys.reshape(*e.shape[:-1], K, E)                                  # (..., N, K, E)
        logits = jnp.einsum("...ke,...nke->...kn", query, keys) / jnp.sqrt(E)    # (..., K, N)
        lam = jax.nn.softmax(logits, axis=-1)                                     # over agents
        head_q = jnp.einsum("...kn,...n->...k", lam, q)                           # (..., K)
        w = jnp.abs(dense(K, "head_w_out")(nn.relu(dense(H, "head_w_hidden")(s))))   # (..., K) ≥ 0
        c = dense(1, "bias_out")(nn.relu(dense(H, "bias_hidden")(s)))[..., 0]
        return (w * head_q).sum(-1) + c


def make_mixer(cfg, team: Team) -> Mixer:
    """The Qatten mixer: ``apply(params, q (..., N), state (..., S), ctx)`` reads the agents' observations
    ``ctx.obs`` (..., N, D) as their features."""
    net = QattenMixer(cfg["QATTEN_NUM_HEADS"], cfg["MIXER_EMBEDDING_DIM"], cfg["MIXER_HYPERNET_HIDDEN_DIM"])

    def apply(params, q, state, ctx: AgentContext):
        return net.apply(params, q, ctx.obs, state)

    N = team.num_agents
    return Mixer(init=lambda rng: net.init(rng, jnp.zeros((N,)), jnp.zeros((N, team.obs_size)),
                                           jnp.zeros((team.state_size,))),
                 apply=apply)


QATTEN = QAlgorithm(name="qatten", make_mixer=make_mixer, uses_state=True)
