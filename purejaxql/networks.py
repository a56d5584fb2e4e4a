"""Agent Q-networks and the ways agents hold their parameters.

Shapes: T time, B batch (environments or sampled sequences), N agents, D observation size,
H hidden size, A actions.

:class:`AgentNetwork` maps a sequence of observations to per-action Q-values. Its recurrent form is a
GRU (AGENT_TYPE=rnn) or an LSTM (lstm) whose hidden state is reset to zero *before* processing an
observation that starts an episode (``first[t]``), the same rule for acting and learning, so hidden
states never leak across episodes. The LSTM's carried state is [c, h] in one array of width 2H.

:class:`SharedAgents` is the parameter-sharing variant: one parameter set, agents folded into the batch
axis and processed in one call. Other variants (per-agent, frozen pretrained) implement the same
``init`` / ``apply`` / ``initial_hidden`` interface: :class:`SeparateAgents` gives every agent its own
parameters (stacked along a leading agent axis, applied with ``jax.vmap`` over agents).

Memory: separate parameters multiply the agent parameters and their optimiser state (Adam: 2 more
copies, plus the target network) by N; activations, replay and environment state do not depend on
the variant.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import constant

from purejaxql.batch_renorm import BatchRenorm
from purejaxql.config import NORM_TYPES

__all__ = ["orthogonal", "GRU", "LSTM", "CELLS", "AgentNetwork", "NORM_TYPES", "LayerNorm", "layer_norm",
           "SharedAgents", "SeparateAgents"]


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


class LSTM(nn.Module):
    """LSTM over time with resets at episode starts; the carried state is one array [c, h] (B, 2H).

    Gate equations (Hochreiter & Schmidhuber 1997, with a forget gate), [c, h] reset to 0 before step t
    wherever first[t]:
    i = σ(x W_i + b_i + h U_i), f = σ(x W_f + b_f + h U_f), g = tanh(x W_g + b_g + h U_g),
    o = σ(x W_o + b_o + h U_o), c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c').
    b_f starts at 1 (the cell keeps its memory at first, Gers et al. 2000), the other biases at 0. Same
    layout as :class:`GRU`: input projections of all T steps before the loop, one (H, H) matrix per gate,
    one step without a loop when T = 1. Keeping c and h in one (B, 2H) array lets everything that carries
    a GRU's hidden state (replay's stored state, PQN's context, evaluation, checkpoints) carry it as is.
    """

    hidden_dim: int

    @nn.compact
    def __call__(self, s0: jax.Array, x: jax.Array, first: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """s0 (B, 2H) = [c, h], x (T, B, E), first (T, B) -> (s_T (B, 2H), hs (T, B, H))."""
        H, E = self.hidden_dim, x.shape[-1]
        w = {g: self.param(f"w_i{g}", nn.initializers.lecun_normal(), (E, H)) for g in "ifgo"}
        b = {g: self.param(f"b_i{g}", nn.initializers.ones_init() if g == "f" else nn.initializers.zeros_init(),
                           (H,)) for g in "ifgo"}
        u = {g: self.param(f"w_h{g}", orthogonal(), (H, H)) for g in "ifgo"}
        xi, xf, xg, xo = (x @ w[g] + b[g] for g in "ifgo")  # (T, B, H) each

        def step(ch, inp):  # the loop carries (c, h) apart: no slicing or joining inside it
            xi_t, xf_t, xg_t, xo_t, first_t = inp
            c, h = (jnp.where(first_t[:, None], 0.0, v) for v in ch)
            i = nn.sigmoid(xi_t + h @ u["i"])
            f = nn.sigmoid(xf_t + h @ u["f"])
            g = jnp.tanh(xg_t + h @ u["g"])
            o = nn.sigmoid(xo_t + h @ u["o"])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (c, h), h

        ch0 = (s0[:, :H], s0[:, H:])
        if x.shape[0] == 1:  # acting: one step, no loop
            (c, h), _ = step(ch0, (xi[0], xf[0], xg[0], xo[0], first[0]))
            return jnp.concatenate([c, h], axis=-1), h[None]
        (c, h), hs = jax.lax.scan(step, ch0, (xi, xf, xg, xo, first))
        return jnp.concatenate([c, h], axis=-1), hs


CELLS = {"gru": GRU, "lstm": LSTM}  # recurrent cells by name (AgentNetwork.cell; AGENT_TYPE rnn -> gru)


@jax.custom_vjp
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """y = (x - mean(x)) / sqrt(var(x) + 1e-6) * scale + bias over the last axis (Ba et al. 2016).

    Same values as ``flax.linen.LayerNorm``; the backward pass is written out by hand,
        dx = (g - mean(g) - x̂ mean(g x̂)) / σ,  g = dy · scale,  x̂ = (x - mean(x)) / σ,
    because XLA:CPU runs the autodiff version ~1.6x slower on arrays with more than two axes (per-agent
    networks under ``vmap``, several seeds)."""
    return _layer_norm_fwd(x, scale, bias)[0]


def _layer_norm_fwd(x, scale, bias):
    centred = x - x.mean(-1, keepdims=True)
    inv_std = jax.lax.rsqrt((centred * centred).mean(-1, keepdims=True) + 1e-6)
    x_hat = centred * inv_std
    return x_hat * scale + bias, (x_hat, inv_std, scale)


def _layer_norm_bwd(res, dy):
    x_hat, inv_std, scale = res
    g = dy * scale
    dx = inv_std * (g - g.mean(-1, keepdims=True) - x_hat * (g * x_hat).mean(-1, keepdims=True))
    lead = tuple(range(dy.ndim - 1))
    return dx, (dy * x_hat).sum(lead), dy.sum(lead)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """Layer normalisation with a learned scale and bias (parameters ``scale``, ``bias``)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        return layer_norm(x, self.param("scale", nn.initializers.ones, (features,)),
                          self.param("bias", nn.initializers.zeros, (features,)))


class AgentNetwork(nn.Module):
    """obs -> [BatchNorm] -> [convolutions] -> num_layers x (Dense(H) -> [norm] -> ReLU) -> [GRU(H) | LSTM(H)]
    -> Dense(A): the Q-values of one agent (or a batch of agents). With ``dueling`` (DUELING; Wang et al. 2016)
    the head is split into a value V = Dense(1) (layer ``Value``) and advantages A = Dense(A) (``Dense_{num_layers}``),
    Q(a) = V + A(a) - mean_b A(b), the mean over every action (JaxMARL's pqn_vdn_ff for Hanabi does the same).

    With ``image_shape`` (H_img, W_img, C; AGENT_TYPE=cnn) the first H_img·W_img·C features of the flat
    observation are that image: it goes through one Conv(c, k×k, stride s, cnn_padding) -> [norm] -> ReLU per
    (c, k, s) of ``cnn_channels`` / ``cnn_kernel_sizes`` / ``cnn_strides`` (layers ``Conv_<i>``, ``conv_norm_<i>``), is
    flattened, and the observation's other features (agent id, last action) are appended before the Dense
    layers. The PQN MinAtar torso is one Conv(16, 3×3) then Dense(128), both layer-normalised.

    ``norm_type`` normalises every hidden layer (``layer_norm``, ``batch_norm``, ``batch_renorm``
    (:mod:`purejaxql.batch_renorm`) or ``none``); ``norm_input`` puts ``input_norm_type`` (``batch_norm`` or
    ``batch_renorm``) on the observations. PQN relies on these in place of a target
    network. BatchNorm layers keep running statistics in the ``batch_stats`` collection: ``train=True``
    normalises with the batch's statistics (and the caller collects the updated running ones), ``False``
    with the running ones. Layers are named ``Dense_0 .. Dense_{num_layers}`` (the last one is the
    output), ``norm_<i>``, ``input_norm`` and ``GRU_0`` (``LSTM_0`` with ``cell="lstm"``), so a
    checkpoint's shapes tell its architecture. The carried hidden state is (B, :attr:`carry_dim`): H for
    the GRU, 2H ([c, h]) for the LSTM.
    """

    action_dim: int
    hidden_dim: int = 64
    init_scale: float = 1.0
    recurrent: bool = True
    num_layers: int = 1
    norm_type: str = "none"
    norm_input: bool = False
    input_norm_type: str = "batch_norm"   # norm_input's normalisation: batch_norm | batch_renorm
    cell: str = "gru"          # the recurrent cell when recurrent: "gru" or "lstm" (purejaxql.networks.CELLS)
    image_shape: Optional[Tuple[int, ...]] = None   # (H_img, W_img, C): convolutions on the observation's image
    cnn_channels: Tuple[int, ...] = (16,)
    cnn_kernel_sizes: Tuple[int, ...] = (3,)
    cnn_strides: Optional[Tuple[int, ...]] = None   # one per convolution; None = 1 for each
    cnn_padding: str = "VALID"                      # or "SAME"
    dueling: bool = False                           # Q = V + A - mean A (two heads)

    @property
    def carry_dim(self) -> int:
        """Width of the hidden state the network takes and returns (a feed-forward one ignores it)."""
        return 2 * self.hidden_dim if self.recurrent and self.cell == "lstm" else self.hidden_dim

    def _norm(self, kind: str, name: str, train: bool):
        if kind == "layer_norm":
            return LayerNorm(name=name)
        if kind == "batch_norm":
            return nn.BatchNorm(use_running_average=not train, name=name)
        if kind == "batch_renorm":
            return BatchRenorm(use_running_average=not train, name=name)
        return lambda x: x

    @nn.compact
    def __call__(self, hidden: jax.Array, obs: jax.Array, first: jax.Array, train: bool = False):
        """hidden (B, carry_dim), obs (T, B, D), first (T, B) -> (hidden_T (B, carry_dim), q (T, B, A))."""
        T, B = obs.shape[:2]
        # Layers run on 2-D (T*B, .) arrays: XLA:CPU runs the network's backward pass faster on those than
        # on (T, B, .) ones (measured for PQN's 2 x 256 MLP).
        x = obs.reshape(T * B, obs.shape[-1])
        if self.norm_input:
            x = self._norm(self.input_norm_type, "input_norm", train)(x)
        if self.image_shape is not None:
            x = self._convolutions(x, train)
        for i in range(self.num_layers):
            x = nn.Dense(self.hidden_dim, kernel_init=orthogonal(self.init_scale), bias_init=constant(0.0),
                         name=f"Dense_{i}")(x)
            x = nn.relu(self._norm(self.norm_type, f"norm_{i}", train)(x))
        if self.recurrent:
            hidden, x = CELLS[self.cell](self.hidden_dim)(hidden, x.reshape(T, B, -1), first)
            x = x.reshape(T * B, -1)
        q = nn.Dense(self.action_dim, kernel_init=orthogonal(self.init_scale), bias_init=constant(0.0),
                     name=f"Dense_{self.num_layers}")(x)                          # (T*B, A): Q, or A if dueling
        if self.dueling:
            v = nn.Dense(1, kernel_init=orthogonal(self.init_scale), bias_init=constant(0.0), name="Value")(x)
            q = v + q - q.mean(-1, keepdims=True)
        return hidden, q.reshape(T, B, -1)

    def _convolutions(self, x: jax.Array, train: bool) -> jax.Array:
        """(M, D) flat observations -> (M, conv features + D - image size)."""
        size = int(np.prod(self.image_shape))
        img = x[:, :size].reshape((x.shape[0],) + tuple(self.image_shape))   # (M, H_img, W_img, C)
        strides = self.cnn_strides or (1,) * len(self.cnn_channels)
        for i, (c, k, s) in enumerate(zip(self.cnn_channels, self.cnn_kernel_sizes, strides)):
            img = nn.Conv(c, (k, k), strides=s, padding=self.cnn_padding, kernel_init=orthogonal(self.init_scale),
                          bias_init=constant(0.0), name=f"Conv_{i}")(img)
            img = nn.relu(self._norm(self.norm_type, f"conv_norm_{i}", train)(img))
        return jnp.concatenate([img.reshape(x.shape[0], -1), x[:, size:]], axis=-1)


class SharedAgents:
    """Parameter sharing: one set of parameters applied to all N agents in one batched call.

    Agents are told apart by a one-hot id appended to their observation (config OBS_AGENT_ID, on by
    default for this variant: purejaxql.spec.Spec.obs_agent_id_default)."""

    trained_idx = None   # every agent learns (see purejaxql.pretrained for frozen agents)
    frozen_mask = None

    @property
    def learner(self):
        """The agents the learner unrolls: all of them."""
        return self

    def __init__(self, network: AgentNetwork, num_agents: int, obs_size: int, last_action: bool = False):
        """``obs_size``: D, the wrapper's observation size; ``last_action``: whether those observations carry
        the last-action one-hot (OBS_LAST_ACTION; the network just sees a wider input)."""
        self.network = network
        self.num_agents = num_agents
        self.obs_size = obs_size
        self.last_action = last_action
        self.hidden_dim = network.carry_dim if network.recurrent else 0  # carried H: 2H for an LSTM ([c, h])

    def _init_one(self, rng: jax.Array) -> Any:
        obs = jnp.zeros((1, 1, self.obs_size))
        return self.network.init(rng, jnp.zeros((1, self.network.carry_dim)), obs, jnp.zeros((1, 1), bool))

    def init(self, rng: jax.Array) -> Any:
        return self._init_one(rng)

    def initial_hidden(self, batch: int) -> jax.Array:
        """(B, N, H) zeros (H = 0 for feed-forward agents)."""
        return jnp.zeros((batch, self.num_agents, self.hidden_dim))

    def _network_hidden(self, hidden: jax.Array) -> jax.Array:
        """(..., H) carried hidden -> what the network takes (zeros of width carry_dim if feed-forward)."""
        if self.network.recurrent:
            return hidden
        return jnp.zeros(hidden.shape[:-1] + (self.network.carry_dim,))

    def _net(self, params, h, obs, first, train: bool):
        """The network on one batch: -> (h, q, updated batch_stats ({} without BatchNorm))."""
        if train and "batch_stats" in params:
            (h, q), new = self.network.apply(params, h, obs, first, train=True, mutable=["batch_stats"])
            return h, q, new["batch_stats"]
        h, q = self.network.apply(params, h, obs, first)
        return h, q, params.get("batch_stats", {})

    def apply(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array):
        """hidden (B, N, H), obs (T, B, N, D), first (T, B) -> (hidden_T (B, N, H), q (T, B, N, A)).
        BatchNorm layers (if any) use their running statistics."""
        hidden, q, _ = self.apply_train(params, hidden, obs, first, train=False)
        return hidden, q

    def apply_train(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array, train: bool = True):
        """As :meth:`apply`, with BatchNorm layers in training mode: -> (hidden_T, q, params with the
        updated running statistics)."""
        T, B, N, D = obs.shape
        h = self._network_hidden(hidden).reshape(B * N, -1)
        first_bn = jnp.repeat(first, N, axis=1)  # (T, B*N): an episode start resets every agent
        h, q, stats = self._net(params, h, obs.reshape(T, B * N, D), first_bn, train)
        hidden_out = h.reshape(B, N, -1) if self.network.recurrent else hidden
        return hidden_out, q.reshape(T, B, N, -1), _with_stats(params, stats)


def _with_stats(params, stats):
    return {**params, "batch_stats": stats} if "batch_stats" in params else params


class SeparateAgents(SharedAgents):
    """No parameter sharing: agent i has its own parameters, the i-th slice of every leaf (leading
    axis N), initialised from its own key and applied with ``jax.vmap`` over agents. Each network
    only ever sees its own agent, so the one-hot id is off by default (OBS_AGENT_ID)."""

    def init(self, rng: jax.Array) -> Any:
        return jax.vmap(self._init_one)(jax.random.split(rng, self.num_agents))  # leaves (N, ...)

    def apply_train(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array, train: bool = True):
        """hidden (B, N, H), obs (T, B, N, D), first (T, B) -> (hidden_T (B, N, H), q (T, B, N, A), params)."""
        h = jnp.swapaxes(self._network_hidden(hidden), 0, 1)          # (N, B, H)
        o = jnp.moveaxis(obs, 2, 0)                                   # (N, T, B, D)
        net = functools.partial(self._net, train=train)
        h, q, stats = jax.vmap(net, in_axes=(0, 0, 0, None))(params, h, o, first)
        hidden_out = jnp.swapaxes(h, 0, 1) if self.network.recurrent else hidden
        return hidden_out, jnp.moveaxis(q, 0, 2), _with_stats(params, stats)  # q (T, B, N, A)
