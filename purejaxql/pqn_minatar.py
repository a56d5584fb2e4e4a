"""Single-agent PQN on MinAtar through gymnax (Asterix, Breakout, Freeway, SpaceInvaders) with convolutional
agents (AGENT_TYPE=cnn): pqn_ps with one agent and MIXER none, under the original PQN scripts' command name.

CLI: `python -m purejaxql.pqn_minatar +alg=pqn_minatar`; in Python: `make_train(config, env)` with
`env = purejaxql.environments.make_env(config)`.
"""
from purejaxql.spec import SPECS

SPEC = SPECS["pqn_minatar"]
make_train = SPEC.make_train  # make_train(config, env) -> the training program (purejaxql.loop.Program)
main = SPEC.main              # python -m purejaxql.pqn_minatar [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
