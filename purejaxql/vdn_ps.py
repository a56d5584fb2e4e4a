"""VDN with one set of agent parameters shared by all agents (agents batched in one call).

CLI: `python -m purejaxql.vdn_ps +alg=vdn_mpe` (or `+alg=vdn_smax`); in Python: `make_train(config, env)`.
"""
from purejaxql import q_learning
from purejaxql.vdn import VDN
from purejaxql.networks import SharedAgents


def make_train(config, env):
    """`train(rng) -> {"runner_state", "metrics"}` for VDN with shared parameters on a JaxMARL env."""
    return q_learning.make_train(config, env, VDN, SharedAgents)


def main():
    from purejaxql.run import cli
    cli(make_train, "vdn_ps")


if __name__ == "__main__":
    main()
