"""Agent Q-networks and the ways agents hold their parameters.

Shapes: T time, B batch (environments or sampled sequences), N agents, D observation size,
H hidden size, A actions.

:class:`AgentNetwork` maps a sequence of observations to per-action Q-values. Its recurrent form is a
GRU whose hidden state is reset to zero *before* processing an observation that starts an episode
(``first[t]``), the same rule for acting and learning, so hidden states never leak across episodes.

:class:`SharedAgents` is the parameter-sharing variant: one parameter set, agents folded into the batch
axis and processed in one call. Other variants (per-agent, frozen pretrained) implement the same
``init`` / ``apply`` / ``initial_hidden`` interface: :class:`SeparateAgents` gives every agent its own
parameters (stacked along a leading agent axis, applied with ``jax.vmap`` over agents).

Memory: separate parameters multiply the agent parameters and their optimiser state (Adam: 2 more
copies, plus the target network) by N; activations, replay and environment state do not depend on
the variant.
"""
from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import constant

__all__ = ["orthogonal", "GRU", "AgentNetwork", "SharedAgents", "SeparateAgents"]


def orthogonal(scale: float = 1.0):
    """Orthogonal initialiser (Saxe et al. 2014) built from matmuls only, with no LAPACK call.

    Why not ``jax.nn.initializers.orthogonal``: it calls LAPACK's QR, and when parameters are initialised
    inside a ``jax.vmap``-ed training program (one init per seed) that QR is a batched custom call whose
    kernel splits the batch over XLA:CPU's intra-op thread pool and blocks waiting for it. On a 2-core
    machine that pool has 2 threads; when both are inside such a kernel no thread is left to run the
    work they wait for and the program deadlocks with every thread asleep (seen here with JAX 0.10.2:
    both ``tf_XLAEigen`` threads in ``OrthogonalQr::Kernel -> ParallelBatchMap -> BlockingCounter::Wait``).

    The matrix is a Gaussian one orthonormalised by Gram-Schmidt, applied twice for numerical accuracy;
    equal in distribution to QR with a positive-diagonal R (Haar measure).
    """
    def init(key, shape, dtype=jnp.float32):
        n_cols = shape[-1]
        n_rows = int(np.prod(shape[:-1]))
        m, k = max(n_rows, n_cols), min(n_rows, n_cols)
        q = _orthonormal_columns(jax.random.normal(key, (m, k), jnp.float32))
        if n_rows < n_cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)
    return init


def _orthonormal_columns(a: jax.Array) -> jax.Array:
    """(m, k), m >= k -> (m, k) with orthonormal columns spanning the same leading subspaces."""
    k = a.shape[1]

    def body(j, q):
        earlier = (jnp.arange(k) < j).astype(q.dtype)
        v = q[:, j]
        for _ in range(2):  # classical Gram-Schmidt, twice
            v = v - q @ ((q.T @ v) * earlier)
        return q.at[:, j].set(v / jnp.sqrt(jnp.sum(v * v)))

    return jax.lax.fori_loop(0, k, body, a)


class GRU(nn.Module):
    """GRU over time with resets at episode starts.

    Gate equations (Cho et al. 2014), h reset to 0 before step t wherever first[t]:
    r = σ(x W_r + b_r + h U_r), z = σ(x W_z + b_z + h U_z), n = tanh(x W_n + b_n + r ⊙ (h U_n + c_n)),
    h' = (1 - z) ⊙ n + z ⊙ h.
    The input projections of all T steps are computed before the time loop; inside it only the three
    (H, H) hidden matmuls remain. Gates keep separate matrices: on XLA:CPU slicing one fused (B, 3H)
    product into gates inside the loop is several times slower than three small matmuls.
    """

    hidden_dim: int

    @nn.compact
    def __call__(self, h0: jax.Array, x: jax.Array, first: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """h0 (B, H), x (T, B, E), first (T, B) -> (h_T (B, H), hs (T, B, H))."""
        H, E = self.hidden_dim, x.shape[-1]
        w = {g: self.param(f"w_i{g}", nn.initializers.lecun_normal(), (E, H)) for g in "rzn"}
        b = {g: self.param(f"b_i{g}", nn.initializers.zeros_init(), (H,)) for g in "rzn"}
        u = {g: self.param(f"w_h{g}", orthogonal(), (H, H)) for g in "rzn"}
        c_n = self.param("b_hn", nn.initializers.zeros_init(), (H,))
        xr, xz, xn = (x @ w[g] + b[g] for g in "rzn")  # (T, B, H) each

        def step(h, inp):
            xr_t, xz_t, xn_t, first_t = inp
            h = jnp.where(first_t[:, None], 0.0, h)
            r = nn.sigmoid(xr_t + h @ u["r"])
            z = nn.sigmoid(xz_t + h @ u["z"])
            n = jnp.tanh(xn_t + r * (h @ u["n"] + c_n))
            h = (1.0 - z) * n + z * h
            return h, h

        if x.shape[0] == 1:  # acting: one step, no loop
            h, _ = step(h0, (xr[0], xz[0], xn[0], first[0]))
            return h, h[None]
        return jax.lax.scan(step, h0, (xr, xz, xn, first))


class AgentNetwork(nn.Module):
    """obs -> Dense(H) -> ReLU -> [GRU(H)] -> Dense(A): Q-values of one agent (or a batch of agents)."""

    action_dim: int
    hidden_dim: int = 64
    init_scale: float = 1.0
    recurrent: bool = True

    @nn.compact
    def __call__(self, hidden: jax.Array, obs: jax.Array, first: jax.Array):
        """hidden (B, H), obs (T, B, D), first (T, B) -> (hidden_T (B, H), q (T, B, A))."""
        x = nn.Dense(self.hidden_dim, kernel_init=orthogonal(self.init_scale), bias_init=constant(0.0))(obs)
        x = nn.relu(x)
        if self.recurrent:
            hidden, x = GRU(self.hidden_dim)(hidden, x, first)
        q = nn.Dense(self.action_dim, kernel_init=orthogonal(self.init_scale), bias_init=constant(0.0))(x)
        return hidden, q


class SharedAgents:
    """Parameter sharing: one set of parameters applied to all N agents in one batched call.

    Agents are told apart by a one-hot id appended to their observation (config OBS_AGENT_ID, on by
    default for this variant)."""

    obs_agent_id_default = True
    trained_idx = None   # every agent learns (see purejaxql.pretrained for frozen agents)
    frozen_mask = None

    @property
    def learner(self):
        """The agents the learner unrolls: all of them."""
        return self

    def __init__(self, network: AgentNetwork, num_agents: int, obs_size: int):
        self.network = network
        self.num_agents = num_agents
        self.obs_size = obs_size
        self.hidden_dim = network.hidden_dim if network.recurrent else 0

    def _init_one(self, rng: jax.Array) -> Any:
        obs = jnp.zeros((1, 1, self.obs_size))
        return self.network.init(rng, jnp.zeros((1, self.network.hidden_dim)), obs, jnp.zeros((1, 1), bool))

    def init(self, rng: jax.Array) -> Any:
        return self._init_one(rng)

    def initial_hidden(self, batch: int) -> jax.Array:
        """(B, N, H) zeros (H = 0 for feed-forward agents)."""
        return jnp.zeros((batch, self.num_agents, self.hidden_dim))

    def _network_hidden(self, hidden: jax.Array) -> jax.Array:
        """(..., H) carried hidden -> what the network takes (zeros of width hidden_dim if feed-forward)."""
        if self.network.recurrent:
            return hidden
        return jnp.zeros(hidden.shape[:-1] + (self.network.hidden_dim,))

    def apply(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array):
        """hidden (B, N, H), obs (T, B, N, D), first (T, B) -> (hidden_T (B, N, H), q (T, B, N, A))."""
        T, B, N, D = obs.shape
        h = self._network_hidden(hidden).reshape(B * N, -1)
        first_bn = jnp.repeat(first, N, axis=1)  # (T, B*N): an episode start resets every agent
        h, q = self.network.apply(params, h, obs.reshape(T, B * N, D), first_bn)
        hidden_out = h.reshape(B, N, -1) if self.network.recurrent else hidden
        return hidden_out, q.reshape(T, B, N, -1)


class SeparateAgents(SharedAgents):
    """No parameter sharing: agent i has its own parameters, the i-th slice of every leaf (leading
    axis N), initialised from its own key and applied with ``jax.vmap`` over agents. Each network
    only ever sees its own agent, so the one-hot id is off by default (OBS_AGENT_ID)."""

    obs_agent_id_default = False

    def init(self, rng: jax.Array) -> Any:
        return jax.vmap(self._init_one)(jax.random.split(rng, self.num_agents))  # leaves (N, ...)

    def apply(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array):
        """hidden (B, N, H), obs (T, B, N, D), first (T, B) -> (hidden_T (B, N, H), q (T, B, N, A))."""
        h = jnp.swapaxes(self._network_hidden(hidden), 0, 1)          # (N, B, H)
        o = jnp.moveaxis(obs, 2, 0)                                   # (N, T, B, D)
        h, q = jax.vmap(self.network.apply, in_axes=(0, 0, 0, None))(params, h, o, first)
        hidden_out = jnp.swapaxes(h, 0, 1) if self.network.recurrent else hidden
        return hidden_out, jnp.moveaxis(q, 0, 2)                      # q (T, B, N, A)
