"""PQN (PQN-VDN with MIXER vdn, the default) with one set of agent parameters shared by all agents.

CLI: `python -m purejaxql.pqn_ps +alg=pqn_mpe` (or `+alg=pqn_smax`); in Python: `make_train(config, env)`.
"""
from purejaxql import pqn
from purejaxql.networks import SharedAgents


def make_train(config, env):
    """`train(rng) -> {"runner_state", "metrics"}` for PQN with shared parameters on a JaxMARL env."""
    return pqn.make_train(config, env, SharedAgents)


def main():
    from purejaxql.run import cli
    cli(make_train, "pqn_ps")


if __name__ == "__main__":
    main()
