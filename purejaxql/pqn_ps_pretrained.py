"""PQN for the agents that learn (sharing parameters), beside frozen pretrained agents that act greedily
with their own networks and are never updated. Same loop, metrics and CLI as `pqn_ps`; the team reward,
global state and reported team return cover only the trained agents.

CLI: `python -m purejaxql.pqn_ps_pretrained +alg=pqn_mpe_tag_pretrained` (predators against the shipped
prey), or any config with `PRETRAINED_AGENTS: {agent_name: path/to.safetensors}`.
In Python: `make_train(config, env, pretrained_agents)` with agent name -> parameters
(`purejaxql.checkpoint.agent_params(path, agent_name)`).
"""
from purejaxql import pqn
from purejaxql.pretrained import pretrained_variant


def make_train(config, env, pretrained_agents):
    """`train(rng) -> {"runner_state", "metrics"}` for PQN beside frozen `pretrained_agents`."""
    return pqn.make_train(config, env, pretrained_variant(env, pretrained_agents))


def main():
    from purejaxql.run import cli
    cli(make_train, "pqn_ps_pretrained")


if __name__ == "__main__":
    main()
