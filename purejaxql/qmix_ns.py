"""QMIX with per-agent parameters: every agent has its own network (parameters stacked along a leading
agent axis, applied with jax.vmap over agents). Same loop, configs, metrics and CLI as `qmix_ps`.

CLI: `python -m purejaxql.qmix_ns +alg=qmix_mpe`; in Python: `make_train(config, env)`.
"""
from purejaxql import q_learning
from purejaxql.qmix import QMIX
from purejaxql.networks import SeparateAgents


def make_train(config, env):
    """`train(rng) -> {"runner_state", "metrics"}` for QMIX with per-agent parameters on a JaxMARL env."""
    return q_learning.make_train(config, env, QMIX, SeparateAgents)


def main():
    from purejaxql.run import cli
    cli(make_train, "qmix_ns")


if __name__ == "__main__":
    main()
