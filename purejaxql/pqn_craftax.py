"""Single-agent feed-forward PQN with Batch Renormalisation on Craftax (purejaxql.craftax_env; the craftax extra):
pqn_ps with one agent and MIXER none, under the original PQN scripts' command name.

CLI: `python -m purejaxql.pqn_craftax +alg=pqn_craftax`; in Python: `make_train(config, env)` with
`env = purejaxql.environments.make_env(config)`.
"""
from purejaxql.spec import SPECS

SPEC = SPECS["pqn_craftax"]
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.pqn_craftax [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
