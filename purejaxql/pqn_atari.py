"""Single-agent PQN on Atari through EnvPool (purejaxql.atari_env; the atari extra) with the Nature-CNN agent:
pqn_ps with one agent and MIXER none, under the original PQN scripts' command name.

CLI: `python -m purejaxql.pqn_atari +alg=pqn_atari alg.ENV_NAME=Pong-v5`; in Python: `make_train(config, env)` with
`env = purejaxql.environments.make_env(config)`.
"""
from purejaxql.spec import SPECS

SPEC = SPECS["pqn_atari"]
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.pqn_atari [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
