"""Qatten with one set of agent parameters per agent (stacked on a leading agent axis, applied with vmap).

CLI: `python -m purejaxql.qatten_ns +alg=qatten_mpe` (or `+alg=qatten_smax`); in Python: `make_train(config, env)`.
OBS_AGENT_ID defaults to off here (each network only sees its own agent).
"""
from purejaxql.spec import Spec

SPEC = Spec("qatten", "ns")
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.qatten_ns [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
