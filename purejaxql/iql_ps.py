"""IQL with one set of agent parameters shared by all agents (agents batched in one call).

CLI: `python -m purejaxql.iql_ps +alg=iql_mpe` (or `+alg=iql_smax`); in Python: `make_train(config, env)`.
"""
from purejaxql import q_learning
from purejaxql.iql import IQL
from purejaxql.networks import SharedAgents


def make_train(config, env):
    """`train(rng) -> {"runner_state", "metrics"}` for IQL with shared parameters on a JaxMARL env."""
    return q_learning.make_train(config, env, IQL, SharedAgents)


def main():
    from purejaxql.run import cli
    cli(make_train, "iql_ps")


if __name__ == "__main__":
    main()
