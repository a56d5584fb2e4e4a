"""CW-QMIX with one set of agent parameters per agent (stacked on a leading agent axis, applied with vmap).

CLI: `python -m purejaxql.cwqmix_ns +alg=cwqmix_mpe` (or `+alg=cwqmix_smax`); in Python: `make_train(config, env)`.
OBS_AGENT_ID defaults to off here (each network only sees its own agent).
"""
from purejaxql.spec import Spec

SPEC = Spec("cwqmix", "ns")
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.cwqmix_ns [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
