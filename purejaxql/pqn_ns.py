"""PQN with per-agent parameters: every agent has its own network (parameters stacked along a leading
agent axis, applied with jax.vmap over agents). Same loop, configs, metrics and CLI as `pqn_ps`.

CLI: `python -m purejaxql.pqn_ns +alg=pqn_mpe`; in Python: `make_train(config, env)`.
"""
from purejaxql import pqn
from purejaxql.networks import SeparateAgents


def make_train(config, env):
    """`train(rng) -> {"runner_state", "metrics"}` for PQN with per-agent parameters on a JaxMARL env."""
    return pqn.make_train(config, env, SeparateAgents)


def main():
    from purejaxql.run import cli
    cli(make_train, "pqn_ns")


if __name__ == "__main__":
    main()
