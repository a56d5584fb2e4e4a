"""Frozen pretrained agents beside trained ones (the ``*_ps_pretrained`` variants).

:class:`PretrainedAgents` has the interface of :class:`~purejaxql.networks.SharedAgents` (``init``,
``initial_hidden``, ``apply``) over all N agents of the env, plus the learner's view of the agents that
learn (``trained_idx``, ``learner``): the trained agents share one parameter set (the only parameters
``init`` returns, so the only ones the optimiser sees); every frozen agent acts greedily with its own
network, whose parameters are constants of the program, with its own hidden state. A frozen network's
architecture (width, feed-forward, GRU or LSTM, last action and agent id in its input) is read from its
parameters' shapes, so it may differ from the trained agents' and may come from a ``_ps`` or ``_ns``
checkpoint.

Inputs: every frozen agent sees the observation it was trained on, cut from the wrapper's
[observation, last action (OBS_LAST_ACTION), agent id (OBS_AGENT_ID)]: a network trained without the last
action is given the observation without it, whatever OBS_LAST_ACTION says (the trained agents' input is
not theirs); one trained with it needs OBS_LAST_ACTION=True (else a ConfigError). Its agent id is
appended by itself when its input has one.

Shapes: T time, B batch, N all agents, Nt trained agents, D obs size of the trained agents' input,
Hc carried hidden size (the largest of all networks'), A actions.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.config import ConfigError
from purejaxql.environments import space_dim
from purejaxql.networks import AgentNetwork, SharedAgents

__all__ = ["PretrainedAgents", "network_of", "input_parts"]


def input_parts(d_in: int, obs_len: int, num_agents: int, num_actions: int, last_action: bool = True):
    """What a network's input of size ``d_in`` holds after the padded observation (``obs_len``):
    (last action of ``num_actions``, agent id of ``num_agents``) as two bools, or None if nothing fits
    (a last action only where ``last_action``: the run's input has one to give). When the two sizes are
    equal, one extra part is read as the agent id (what every checkpoint made before OBS_LAST_ACTION has)."""
    for last, with_id in ((False, False), (False, True), (True, False), (True, True)):
        if (last <= last_action) and d_in == obs_len + last * num_actions + with_id * num_agents:
            return last, with_id
    return None


def network_of(params: Mapping[str, Any], agent: str, obs_len: int, num_agents: int, num_actions: int,
               last_action: bool = False):
    """Rebuild the :class:`AgentNetwork` that ``params`` belong to, checking they fit the env (and, with
    ``last_action``, an input that has the last action: OBS_LAST_ACTION).

    Returns (network, uses_agent_id); :func:`input_parts` tells whether it also takes its last action."""
    try:
        p = params["params"]
        n_dense = sum(1 for k in p if k.startswith("Dense_"))
        d_in, hidden = np.shape(p["Dense_0"]["kernel"])
        h_out, a_out = np.shape(p[f"Dense_{n_dense - 1}"]["kernel"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"pretrained parameters of {agent!r} are not an agent network's "
                          "(expected params/Dense_0/kernel ... params/Dense_<k>/kernel)") from None
    if "Conv_0" in p:
        raise ConfigError(f"pretrained parameters of {agent!r} are a convolutional (AGENT_TYPE=cnn) agent's; "
                          "frozen pretrained agents can be feed-forward, GRU or LSTM agents only")
    parts = input_parts(int(d_in), obs_len, num_agents, num_actions, last_action)
    if parts is None:
        hint = ""
        if not last_action and input_parts(int(d_in), obs_len, num_agents, num_actions) is not None:
            hint = " (its size fits an agent trained with its last action: set OBS_LAST_ACTION=True)"
        raise ConfigError(f"pretrained parameters of {agent!r} take observations of size {d_in}, but this env "
                          f"gives {obs_len} (padded), or {obs_len + num_agents} with the agent id"
                          + (f", +{num_actions} with the last action" if last_action else "") + hint)
    if a_out != num_actions:
        raise ConfigError(f"pretrained parameters of {agent!r} output {a_out} actions, but this env has "
                          f"{num_actions} (padded)")
    recurrent = "GRU_0" in p or "LSTM_0" in p
    stats = params.get("batch_stats", {})
    renorm = lambda name: "batch_renorm" if "steps" in stats[name] else "batch_norm"  # noqa: E731
    norm = "none" if "norm_0" not in p else ("layer_norm" if "norm_0" not in stats else renorm("norm_0"))
    net = AgentNetwork(action_dim=num_actions, hidden_dim=int(hidden), recurrent=recurrent,
                       cell="lstm" if "LSTM_0" in p else "gru", num_layers=n_dense - 1, norm_type=norm,
                       norm_input="input_norm" in p,
                       input_norm_type=renorm("input_norm") if "input_norm" in stats else "batch_norm")
    return net, parts[1]


class PretrainedAgents:
    """Trained agents sharing parameters + frozen pretrained agents (see the module docstring)."""

    def __init__(self, network: AgentNetwork, agents, obs_size: int, max_obs_length: int,
                 pretrained: Mapping[str, Any], last_action: bool = False):
        self.agents = list(agents)
        self.num_agents = len(self.agents)
        unknown = [a for a in pretrained if a not in self.agents]
        if unknown:
            raise ConfigError(f"pretrained agent {unknown[0]!r} is not an agent of the env ({self.agents})")
        if len(pretrained) == self.num_agents:
            raise ConfigError("every agent is pretrained: nothing is left to train")
        self.frozen_mask = np.array([a in pretrained for a in self.agents])
        self.frozen_idx, self.trained_idx = np.flatnonzero(self.frozen_mask), np.flatnonzero(~self.frozen_mask)
        self.learner = SharedAgents(network, len(self.trained_idx), obs_size, last_action)
        self.obs_len = max_obs_length
        self.frozen = []  # (index, network, params as jnp constants, uses agent id)
        self.frozen_input_len = {}  # index -> how much of the wrapper's observation it takes
        A = network.action_dim
        for i in self.frozen_idx:
            name = self.agents[i]
            net, with_id = network_of(pretrained[name], name, max_obs_length, self.num_agents, A, last_action)
            d_in = np.shape(pretrained[name]["params"]["Dense_0"]["kernel"])[0]
            with_last, _ = input_parts(int(d_in), max_obs_length, self.num_agents, A, last_action)
            self.frozen.append((int(i), net, jax.tree.map(jnp.asarray, pretrained[name]), with_id))
            self.frozen_input_len[int(i)] = max_obs_length + (A if with_last else 0)
        self.hidden_dim = max([self.learner.hidden_dim] +
                              [n.carry_dim if n.recurrent else 0 for _, n, _, _ in self.frozen])

    def init(self, rng: jax.Array) -> Any:
        return self.learner.init(rng)

    def initial_hidden(self, batch: int) -> jax.Array:
        """(B, N, Hc) zeros."""
        return jnp.zeros((batch, self.num_agents, self.hidden_dim))

    def apply(self, params, hidden: jax.Array, obs: jax.Array, first: jax.Array):
        """hidden (B, N, Hc), obs (T, B, N, D), first (T, B) -> (hidden_T (B, N, Hc), q (T, B, N, A))."""
        T, B, N, _ = obs.shape
        Ht = self.learner.hidden_dim
        h_t, q_t = self.learner.apply(params, hidden[:, self.trained_idx, :Ht], obs[:, :, self.trained_idx],
                                      first)
        hs = [None] * N
        qs = [None] * N
        for j, i in enumerate(self.trained_idx):
            hs[i], qs[i] = h_t[:, j], q_t[:, :, j]
        for i, net, p, with_id in self.frozen:
            x = obs[:, :, i, :self.frozen_input_len[i]]  # observation (+ last action if it was trained with it)
            if with_id:
                x = jnp.concatenate([x, jnp.broadcast_to(jnp.eye(N)[i], (T, B, N))], axis=-1)
            H = net.carry_dim
            h_i = hidden[:, i, :H] if net.recurrent else jnp.zeros((B, H))
            h_i, qs[i] = net.apply(p, h_i, x, first)
            hs[i] = h_i if net.recurrent else jnp.zeros((B, 0))
        pad = lambda h: jnp.pad(h, ((0, 0), (0, self.hidden_dim - h.shape[-1])))  # noqa: E731
        return jnp.stack([pad(h) for h in hs], axis=1), jnp.stack(qs, axis=2)


def pretrained_variant(env, pretrained_agents: Mapping[str, Any]):
    """The ``agents_cls`` of :func:`purejaxql.q_learning.make_train` for frozen ``pretrained_agents``
    (agent name -> that agent's network parameters) beside trained agents that share parameters."""
    if not isinstance(pretrained_agents, Mapping) or not pretrained_agents:
        raise ConfigError("pretrained_agents must map at least one agent name to its parameters "
                          "(CLI: PRETRAINED_AGENTS={agent_name: path/to.safetensors})")
    max_obs = max(space_dim(env.observation_space(a)) for a in env.agents)

    def make(network: AgentNetwork, num_agents: int, obs_size: int, last_action: bool = False) -> PretrainedAgents:
        return PretrainedAgents(network, env.agents, obs_size, max_obs, pretrained_agents, last_action)
    return make
