"""Single-agent PQN on gymnax's classic control (CartPole-v1; Acrobot-v1 by ENV_NAME): pqn_ps with one
agent and MIXER none, under the original PQN scripts' command name.

CLI: `python -m purejaxql.pqn_gymnax +alg=pqn_cartpole`; in Python: `make_train(config, env)` with
`env = purejaxql.environments.make_env(config)`.
"""
from purejaxql.spec import SPECS

SPEC = SPECS["pqn_gymnax"]
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.pqn_gymnax [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
