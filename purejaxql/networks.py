"""Agent Q-networks and the ways agents hold their parameters.

Shapes: T time, B batch (environments or sampled sequences), N agents, D observation size,
H hidden size, A actions.

:class:`AgentNetwork` maps a sequence of observations to per-action Q-values. Its recurrent form is a
GRU whose hidden state is reset to zero *before* processing an observation that starts an episode
(``first[t]``), the same rule for acting and learning, so hidden states never leak across episodes.

:class:`SharedAgents` is the parameter-sharing variant: one parameter set, agents folded into the batch
axis and processed in one call. Other variants (per-agent, frozen pretrained) implement the same
``init`` / ``apply`` / ``initial_hidden`` interface.
"""
from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant, orthogonal

__all__ = ["GRU", "AgentNetwork", "SharedAgents"]


class GRU(nn.Module):
    """GRU over time with resets at episode starts.

    The input projection of all T steps is one matmul outside the time loop; inside the loop only the
    hidden projection remains (3 gates fused into one (H, 3H) matmul). Gate equations (Cho et al. 2014):
    r = σ(x W_r + h U_r + b_r), z = σ(x W_z + h U_z + b_z), n = tanh(x W_n + b_n + r ⊙ (h U_n + c_n)),
    h' = (1 - z) ⊙ n + z ⊙ h.
    """

    hidden_dim: int

    @nn.compact
    def __call__(self, h0: jax.Array, x: jax.Array, first: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """h0 (B, H), x (T, B, E), first (T, B) -> (h_T (B, H), hs (T, B, H))."""
        H = self.hidden_dim
        w_in = self.param("w_in", nn.initializers.lecun_normal(), (x.shape[-1], 3 * H))
        b_in = self.param("b_in", nn.initializers.zeros_init(), (3 * H,))
        w_h = self.param("w_h", _stacked_orthogonal(3), (H, 3 * H))
        b_h = self.param("b_h", nn.initializers.zeros_init(), (3 * H,))
        xg = x @ w_in + b_in  # (T, B, 3H)

        def step(h, inp):
            xg_t, first_t = inp
            h = jnp.where(first_t[:, None], 0.0, h)
            hg = h @ w_h + b_h
            r = nn.sigmoid(xg_t[:, :H] + hg[:, :H])
            z = nn.sigmoid(xg_t[:, H:2 * H] + hg[:, H:2 * H])
            n = jnp.tanh(xg_t[:, 2 * H:] + r * hg[:, 2 * H:])
            h = (1.0 - z) * n + z * h
            return h, h

        return jax.lax.scan(step, h0, (xg, first))


def _stacked_orthogonal(k: int):
    """Orthogonal init for each of k (H, H) blocks of an (H, kH) matrix."""
    def init(key, shape, dtype=jnp.float32):
        keys = jax.random.split(key, k)
        blocks = [orthogonal()(kk, (shape[0], shape[0]), dtype) for kk in keys]
        return jnp.concatenate(blocks, axis=1)
    return init


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
    """Parameter sharing: one set of parameters applied to all N agents in one batched call."""

    def __init__(self, network: AgentNetwork, num_agents: int, obs_size: int):
        self.network = network
        self.num_agents = num_agents
        self.obs_size = obs_size
        self.hidden_dim = network.hidden_dim if network.recurrent else 0

    def init(self, rng: jax.Array) -> Any:
        obs = jnp.zeros((1, 1, self.obs_size))
        return self.network.init(rng, jnp.zeros((1, self.network.hidden_dim)), obs, jnp.zeros((1, 1), bool))

    def initial_hidden(self, batch: int) -> jax.Array:
        """(B, N, H) zeros (H = 0 for feed-forward agents)."""
        return jnp.zeros((batch, self.num_agents, self.hidden_dim))

    def apply(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array):
        """hidden (B, N, H), obs (T, B, N, D), first (T, B) -> (hidden_T (B, N, H), q (T, B, N, A))."""
        T, B, N, D = obs.shape
        h = hidden.reshape(B * N, -1)
        if not self.network.recurrent:
            h = jnp.zeros((B * N, self.network.hidden_dim))
        first_bn = jnp.repeat(first, N, axis=1)  # (T, B*N): an episode start resets every agent
        h, q = self.network.apply(params, h, obs.reshape(T, B * N, D), first_bn)
        hidden_out = h.reshape(B, N, -1) if self.network.recurrent else hidden
        return hidden_out, q.reshape(T, B, N, -1)
