"""Team return of a uniformly random policy (over each agent's available actions): the floor a
learning test must clear.

    python bench/random_policy.py MPE_simple_speaker_listener_v4 [--episodes 1024] [--seed 0]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.evaluation import reset_envs, step_envs
from purejaxql.run import make_env
from purejaxql.utils import CTRolloutManager


def random_returns(env_name: str, episodes: int, seed: int) -> np.ndarray:
    """(episodes, N) returns of the first episode of each of ``episodes`` envs."""
    env = make_env({"ENV_NAME": env_name})
    w = CTRolloutManager(env, episodes)

    def run(rng):
        carry = reset_envs(w, rng, jnp.zeros((episodes, w.num_agents, 0)))

        def step(c, k):
            carry, finished, ret = c
            k_act, k_env = jax.random.split(k)
            actions = jax.random.categorical(k_act, jnp.where(carry.avail > 0, 0.0, -jnp.inf))
            carry, (_, done, agent_return, _, _) = step_envs(w, k_env, carry, actions, carry.hidden)
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
    a = p.parse_args()
    ret = random_returns(a.env_name, a.episodes, a.seed)
    team = ret.sum(-1)
    print(f"{a.env_name}: random policy team return {team.mean():.2f} ± {team.std():.2f} "
          f"over {a.episodes} episodes; per agent {np.round(ret.mean(0), 2).tolist()}")


if __name__ == "__main__":
    main()
