"""QMIX with one set of agent parameters shared by all agents (agents batched in one call).

CLI: `python -m purejaxql.qmix_ps +alg=qmix_mpe` (or `+alg=qmix_smax`); in Python: `make_train(config, env)`.
"""
from purejaxql import q_learning
from purejaxql.qmix import QMIX
from purejaxql.networks import SharedAgents


def make_train(config, env):
    """`train(rng) -> {"runner_state", "metrics"}` for QMIX with shared parameters on a JaxMARL env."""
    return q_learning.make_train(config, env, QMIX, SharedAgents)


def main():
    from purejaxql.run import cli
    cli(make_train, "qmix_ps")


if __name__ == "__main__":
    main()
