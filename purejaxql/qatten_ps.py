"""Qatten with one set of agent parameters shared by all agents (agents batched in one call).

CLI: `python -m purejaxql.qatten_ps +alg=qatten_mpe` (or `+alg=qatten_smax`); in Python: `make_train(config, env)`.
"""
from purejaxql.spec import Spec

SPEC = Spec("qatten", "ps")
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.qatten_ps [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
