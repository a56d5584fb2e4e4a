"""VDN with per-agent parameters: every agent has its own network (parameters stacked along a leading
agent axis, applied with jax.vmap over agents). Same loop, configs, metrics and CLI as `vdn_ps`.

CLI: `python -m purejaxql.vdn_ns +alg=vdn_mpe`; in Python: `make_train(config, env)`.
"""
from purejaxql.spec import Spec

SPEC = Spec("vdn", "ns")
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.vdn_ns [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
