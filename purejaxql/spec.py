"""What an entry module is: an algorithm, a way of holding agent parameters, and whether some agents are
frozen pretrained ones. Each of the 24 algorithm entry modules (``qmix_ps``, ``pqn_ns``, ``vdn_ps_pretrained``,
...) declares one :class:`Spec` and hands it to the CLI, as do the single-agent PQN commands (``pqn_gymnax``,
``pqn_minatar``, ``pqn_rnn_gymnax``: ``pqn_ps`` with another default config); the CLI, the run folder and
``EVAL_ONLY`` read these fields, never the module's name.

This module is light on purpose (no JAX): ``python -m purejaxql.<module>`` checks the command line before
the heavy libraries load, so a mistake is reported in about a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from purejaxql.config import ConfigError, resolve_config

__all__ = ["Spec", "SPECS", "SINGLE_AGENT_SPECS", "ALGORITHMS", "REPLAY_ALGORITHMS", "VARIANTS"]

# the replay loop (purejaxql.q_learning), one value decomposition each
REPLAY_ALGORITHMS = ("iql", "vdn", "qmix", "qplex", "owqmix", "cwqmix", "qatten")
ALGORITHMS = REPLAY_ALGORITHMS + ("pqn",)    # + online Q(λ) (purejaxql.pqn)
VARIANTS = ("ps", "ns")                      # shared parameters / one parameter set per agent


@dataclass(frozen=True)
class Spec:
    """One entry module: ``algorithm`` (a replay learner or pqn), ``variant`` (ps: agents share one
    parameter set; ns: each agent has its own) and ``pretrained`` (some agents are frozen pretrained ones
    that act greedily and never learn; the others share parameters)."""
    algorithm: str      # iql | vdn | qmix | qplex | owqmix | cwqmix | qatten | pqn
    variant: str = "ps"
    pretrained: bool = False
    entry: Optional[str] = None           # the module's name when it is not <algorithm>_<variant>: the
                                          # single-agent PQN commands (pqn_gymnax, pqn_minatar, ...)
    default_config: Optional[str] = None  # the shipped config used when no +alg= is given

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS or self.variant not in VARIANTS or \
                (self.pretrained and self.variant != "ps"):
            raise ValueError(f"no such entry point: {self}")

    @property
    def module(self) -> str:
        """The entry module's name, e.g. ``qmix_ps_pretrained`` (``python -m purejaxql.<module>``)."""
        if self.entry:
            return self.entry
        return f"{self.algorithm}_{self.variant}" + ("_pretrained" if self.pretrained else "")

    @property
    def variant_label(self) -> str:
        """How a checkpoint header names the variant: ``ps``, ``ns`` or ``ps_pretrained``."""
        return self.variant + ("_pretrained" if self.pretrained else "")

    @property
    def default_alg_config(self) -> str:
        """The shipped config the CLI uses when no ``+alg=`` is given."""
        if self.default_config:
            return self.default_config
        return f"{self.algorithm}_mpe" + ("_tag_pretrained" if self.pretrained else "")

    @property
    def obs_agent_id_default(self) -> bool:
        """OBS_AGENT_ID when the config leaves it unset: on where agents share a network, off where each
        network only ever sees its own agent."""
        return self.variant == "ps"

    def make_train(self, config: Mapping[str, Any], env, pretrained_agents: Optional[Mapping[str, Any]] = None):
        """The training program (:class:`purejaxql.loop.Program`) for ``config`` on a JaxMARL ``env``;
        ``pretrained_agents`` {agent name: network parameters} for the ``*_pretrained`` modules only."""
        # the heavy modules (JAX, flax, flashbax) load here, once the input is known to be good
        from purejaxql import iql, pqn, q_learning, qatten, qmix, qplex, vdn, wqmix
        from purejaxql.networks import SeparateAgents, SharedAgents
        from purejaxql.pretrained import pretrained_variant

        if self.pretrained:
            agents_cls = pretrained_variant(env, pretrained_agents)
        elif pretrained_agents:
            raise ConfigError(f"{self.module} takes no pretrained agents (the *_pretrained modules do)")
        else:
            agents_cls = SharedAgents if self.variant == "ps" else SeparateAgents
        cfg = resolve_config(config, self, env)
        if self.algorithm == "pqn":
            return pqn.make_train(cfg, env, agents_cls)
        algorithm = {"iql": iql.IQL, "vdn": vdn.VDN, "qmix": qmix.QMIX, "qplex": qplex.QPLEX, "owqmix": wqmix.OW_QMIX,
                     "cwqmix": wqmix.CW_QMIX, "qatten": qatten.QATTEN}[self.algorithm]
        return q_learning.make_train(cfg, env, algorithm, agents_cls)

    def main(self, argv=None):
        """``python -m purejaxql.<module>``: the command line (purejaxql.cli)."""
        from purejaxql.cli import cli
        cli(self, argv)


# Single-agent PQN under the original PQN scripts' command names: pqn_ps (MIXER none, one agent) on a gymnax
# Craftax or EnvPool Atari env (purejaxql.gymnax_env, craftax_env, atari_env), each with its own default config.
SINGLE_AGENT_SPECS = [Spec("pqn", "ps", entry="pqn_gymnax", default_config="pqn_cartpole"),
                      Spec("pqn", "ps", entry="pqn_minatar", default_config="pqn_minatar"),
                      Spec("pqn", "ps", entry="pqn_rnn_gymnax", default_config="pqn_rnn_memory_chain"),
                      Spec("pqn", "ps", entry="pqn_rnn_craftax", default_config="pqn_rnn_craftax"),
                      Spec("pqn", "ps", entry="pqn_craftax", default_config="pqn_craftax"),
                      Spec("pqn", "ps", entry="pqn_atari", default_config="pqn_atari")]

SPECS: Dict[str, Spec] = {s.module: s for s in
                          [Spec(a, v) for a in ALGORITHMS for v in VARIANTS] +
                          [Spec(a, "ps", pretrained=True) for a in ALGORITHMS] + SINGLE_AGENT_SPECS}
