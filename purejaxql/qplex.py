"""QPLEX: duplex dueling value factorisation (Wang et al. 2021, "QPLEX: Duplex Dueling Multi-Agent
Q-Learning").

Shapes: T time, Bs sampled sequences, N agents, A actions, S global state size, K = QPLEX_NUM_KERNEL,
H = MIXER_HYPERNET_HIDDEN_DIM.

Each agent's value is split into a state value and an advantage, V_i = max_{a ∈ avail} Q_i(τ_i, a) and
A_i = Q_i(τ_i, u_i) - V_i ≤ 0, both moved by a positive, state-conditioned transformation (the paper's
"transformation", conditioned here on the global state s as a stand-in for the joint history):
    Q'_i = w_i(s) Q_i + b_i(s),    V'_i = w_i(s) V_i + b_i(s),    A'_i = Q'_i - V'_i,     w_i(s) > 0
The joint value is a dueling sum whose advantage weights come from an attention over the state and the
joint action u (one-hot), K kernels:
    λ_i(s, u) = Σ_k |key_k(s)|_i · σ(agent_k(s))_i · σ(action_k(s, u))_i  > 0
    Q_tot(s, u) = Σ_i V'_i + Σ_i λ_i(s, u) A'_i  =  Σ_i Q'_i + Σ_i (λ_i(s, u) - 1) A'_i
IGM: every A'_i ≤ 0 with equality at the agent's greedy action and every λ_i > 0, so the joint greedy
action of Q_tot is the agents' greedy actions (tested). As the authors' code, the advantages entering
the λ-weighted term carry no gradient (the agents learn through Σ_i Q'_i; the λ networks through the
weighted term), and V_i is computed without gradient.

Learnt from the team reward with the replay loop's double-Q target (purejaxql.q_learning); at the target's
greedy actions every A'_i = 0, so the target is Σ_i V̄'_i of the double-Q values:
    y_t = r_t + γ (1 - d_t) Σ_i [w̄_i(s_{t+1}) Q̄_i(o_{t+1,i}, argmax_{a ∈ avail} Q_i(o_{t+1,i}, a)) + b̄_i(s_{t+1})]
    L = mean_{t, b} (y_t - Q_tot(s_t, u_t))²
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant

from purejaxql.networks import orthogonal
from purejaxql.decomposition import AgentContext, Mixer, QAlgorithm, Team


class StateMLP(nn.Module):
    """x -> Dense(hidden) -> ReLU -> Dense(out)."""
    hidden_dim: int
    output_dim: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=orthogonal(), bias_init=constant(0.0))(x))
        return nn.Dense(self.output_dim, kernel_init=orthogonal(), bias_init=constant(0.0))(x)


class QPlexMixer(nn.Module):
    """q (..., N), V (..., N), actions (..., N), s (..., S) -> Q_tot (...)."""
    num_agents: int
    num_actions: int
    hidden_dim: int
    num_kernels: int

    @nn.compact
    def __call__(self, q, v, actions, s):
        N, K = self.num_agents, self.num_kernels
        w = jnp.abs(StateMLP(self.hidden_dim, N, name="transform_w")(s)) + 1e-10         # (..., N) > 0
        b = StateMLP(self.hidden_dim, N, name="transform_b")(s)                           # (..., N)
        q_t, v_t = w * q + b, w * v + b
        adv = jax.lax.stop_gradient(q_t - v_t)                                   # A'_i ≤ 0, no gradient
        joint = jnp.concatenate([s, jax.nn.one_hot(actions, self.num_actions).reshape(*actions.shape[:-1], -1)],
                                axis=-1)                                         # (..., S + N*A)
        keys = jnp.abs(StateMLP(self.hidden_dim, K * N, name="keys")(s)) + 1e-10          # (..., K*N)
        agent_w = nn.sigmoid(StateMLP(self.hidden_dim, K * N, name="agents")(s))
        action_w = nn.sigmoid(StateMLP(self.hidden_dim, K * N, name="actions")(joint))
        lam = (keys * agent_w * action_w).reshape(*s.shape[:-1], K, N).sum(-2)   # λ_i(s, u) > 0: (..., N)
        self.sow("intermediates", "w", w)          # read by bench/qplex_mixer_stats.py (a no-op in training)
        self.sow("intermediates", "lam", lam)
        return q_t.sum(-1) + ((lam - 1.0) * adv).sum(-1)


def make_mixer(cfg, team: Team) -> Mixer:
    """The QPLEX mixer: ``apply(params, q (..., N), state (..., S), ctx)`` reads V_i = ``ctx.greedy`` and the
    joint action ``ctx.actions``."""
    N = team.num_agents
    net = QPlexMixer(N, team.num_actions, cfg["MIXER_HYPERNET_HIDDEN_DIM"], cfg["QPLEX_NUM_KERNEL"])

    def apply(params, q, state, ctx: AgentContext):
        return net.apply(params, q, ctx.greedy, ctx.actions, state)

    return Mixer(init=lambda rng: net.init(rng, jnp.zeros((N,)), jnp.zeros((N,)), jnp.zeros((N,), jnp.int32),
                                           jnp.zeros((team.state_size,))),
                 apply=apply)


QPLEX = QAlgorithm(name="qplex", make_mixer=make_mixer, uses_state=True)
