"""Team return of a uniformly random policy (over each agent's available actions): the floor a
learning test must clear.

    python bench/random_policy.py MPE_simple_speaker_listener_v4 [--episodes 1024] [--seed 0]
    python bench/random_policy.py lbf --task 25x25-4p-4f      # Level-Based Foraging / Robot Warehouse tasks
    python bench/random_policy.py MPE_simple_tag_v3 \\
        --pretrained agent_0=pkg:checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors

With ``--pretrained AGENT=CHECKPOINT`` (repeatable) those agents act greedily with the checkpoint's
network, as frozen pretrained agents do in training, and the team return covers the random agents only
(random predators against the shipped prey).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.environments import CTRolloutManager, make_env, reset_envs, step_envs
from purejaxql.evaluation import greedy_actions


def frozen_agents(env, w: CTRolloutManager, pretrained):
    """(agents, params) acting greedily for the ``pretrained`` {agent: checkpoint path} ones (the other
    agents' network is built but never used)."""
    from purejaxql.checkpoint import agent_params, resolve_path
    from purejaxql.networks import AgentNetwork
    from purejaxql.pretrained import pretrained_variant

    params = {a: agent_params(resolve_path(p), a) for a, p in pretrained.items()}
    agents = pretrained_variant(env, params)(AgentNetwork(action_dim=w.max_action_space, hidden_dim=8),
                                             w.num_agents, w.obs_size)
    return agents, agents.init(jax.random.PRNGKey(0))


def random_returns(env_name: str, episodes: int, seed: int, pretrained=None, task=None) -> np.ndarray:
    """(episodes, N) returns of the first episode of each of ``episodes`` envs (``task``: lbf / rware TASK)."""
    env = make_env({"ENV_NAME": env_name, "TASK": task})
    w = CTRolloutManager(env, episodes)
    agents, params = frozen_agents(env, w, pretrained) if pretrained else (None, None)
    hidden0 = agents.initial_hidden(episodes) if agents else jnp.zeros((episodes, w.num_agents, 0))

    def run(rng):
        carry = reset_envs(w, rng, hidden0)

        def step(c, k):
            carry, finished, ret = c
            k_act, k_env = jax.random.split(k)
            actions = jax.random.categorical(k_act, jnp.where(carry.avail > 0, 0.0, -jnp.inf))
            hidden = carry.hidden
            if agents is not None:
                hidden, q = agents.apply(params, carry.hidden, carry.obs[None], carry.first[None])
                actions = jnp.where(agents.frozen_mask, greedy_actions(q[0], carry.avail), actions)
            carry, (_, done, agent_return, _, _, _) = step_envs(w, k_env, carry, actions, hidden)
            ret = jnp.where((done & ~finished)[:, None], agent_return, ret)
            return (carry, finished | done, ret), None

        init = (carry, jnp.zeros(episodes, bool), jnp.zeros((episodes, w.num_agents)))
        (_, finished, ret), _ = jax.lax.scan(step, init, jax.random.split(rng, w.max_steps + 1))
        return finished, ret

    finished, ret = jax.jit(run)(jax.random.PRNGKey(seed))
    assert bool(finished.all()), "every env must finish an episode within max_steps + 1 steps"
    return np.asarray(ret)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("env_name")
    p.add_argument("--episodes", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default=None, help="the TASK of ENV_NAME lbf / rware (e.g. 8x8-2p-2f-coop)")
    p.add_argument("--pretrained", action="append", default=[], metavar="AGENT=CHECKPOINT",
                   help="an agent that acts greedily with a checkpoint's network (repeatable)")
    a = p.parse_args()
    pretrained = {}
    for item in a.pretrained:
        agent, sep, path = item.partition("=")
        if not sep or not agent or not path:
            p.error(f"--pretrained takes AGENT=CHECKPOINT, got {item!r}")
        pretrained[agent] = path
    from purejaxql.config import ConfigError
    try:
        ret = random_returns(a.env_name, a.episodes, a.seed, pretrained, a.task)
    except ConfigError as e:  # unknown env, agent or checkpoint
        p.error(str(e))
    agents = make_env({"ENV_NAME": a.env_name, "TASK": a.task}).agents
    random_idx = [i for i, name in enumerate(agents) if name not in pretrained]
    team = ret[:, random_idx].sum(-1)
    who = f"random agents ({', '.join(agents[i] for i in random_idx)})" if pretrained else "random policy"
    print(f"{a.env_name}{'_' + a.task if a.task else ''}: {who} team return {team.mean():.2f} ± {team.std():.2f} over {a.episodes} episodes; "
          f"per agent {np.round(ret.mean(0), 2).tolist()}")


if __name__ == "__main__":
    main()
