"""IQL with per-agent parameters: every agent has its own network (parameters stacked along a leading
agent axis, applied with jax.vmap over agents). Same loop, configs, metrics and CLI as `iql_ps`.

CLI: `python -m purejaxql.iql_ns +alg=iql_mpe`; in Python: `make_train(config, env)`.
"""
from purejaxql.spec import Spec

SPEC = Spec("iql", "ns")
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.iql_ns [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
