"""PQN (PQN-VDN with MIXER vdn, the default) with one set of agent parameters shared by all agents.

CLI: `python -m purejaxql.pqn_ps +alg=pqn_mpe` (or `+alg=pqn_smax`); in Python: `make_train(config, env)`.
"""
from purejaxql.spec import Spec

SPEC = Spec("pqn", "ps")
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.pqn_ps [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
