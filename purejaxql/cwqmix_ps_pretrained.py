"""CW-QMIX for the agents that learn (sharing parameters), beside frozen pretrained agents that act greedily
with their own networks and are never updated. Same loop, metrics and CLI as `cwqmix_ps`; the team reward,
global state and reported team return cover only the trained agents.

CLI: `python -m purejaxql.cwqmix_ps_pretrained +alg=cwqmix_mpe_tag_pretrained` (predators against the shipped
prey), or any config with `PRETRAINED_AGENTS: {agent_name: path/to.safetensors}`.
In Python: `make_train(config, env, pretrained_agents)` with agent name -> parameters.
"""
from purejaxql.spec import Spec

SPEC = Spec("cwqmix", "ps", pretrained=True)
make_train = SPEC.make_train  # make_train(config, env, pretrained_agents) -> the training program (loop.Program)
main = SPEC.main              # python -m purejaxql.cwqmix_ps_pretrained [+alg=...] [KEY=value ...]

if __name__ == "__main__":
    main()
