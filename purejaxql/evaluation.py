"""Greedy evaluation and the per-agent / per-team metrics every algorithm reports.

Shapes: B environments, N agents, D obs size, S state size, A actions, H hidden.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp

from purejaxql.environments import CTRolloutManager, reset_envs, step_envs
from purejaxql.rl_math import epsilon_greedy, masked_argmax

__all__ = ["make_greedy_eval", "greedy_actions", "teams_of", "per_agent_metrics"]


def greedy_actions(q: jax.Array, avail: jax.Array) -> jax.Array:
    """q, avail: (..., A) -> (...,) greedy available actions."""
    flat = jax.vmap(masked_argmax)(q.reshape(-1, q.shape[-1]), avail.reshape(-1, avail.shape[-1]))
    return flat.reshape(q.shape[:-1]).astype(jnp.int32)


def teams_of(agents: Sequence[str]) -> Dict[str, list]:
    """Teams by agent name, as JaxMARL names agents: ``adversary_0, adversary_1, agent_0`` ->
    ``{"adversary": [0, 1], "agent": [2]}`` (indices into ``agents``)."""
    teams: Dict[str, list] = {}
    for i, a in enumerate(agents):
        teams.setdefault(re.sub(r"_\d+$", "", a), []).append(i)
    return teams


def per_agent_metrics(prefix: str, agent_means: jax.Array, agents: Sequence[str]) -> Dict[str, jax.Array]:
    """(N,) mean episode return of each agent -> ``{prefix}_{agent}`` for every agent and
    ``{prefix}_team_{team}`` (the team members' returns summed) for every team of two or more agents
    when the env has more than one team."""
    out = {f"{prefix}_{a}": agent_means[i] for i, a in enumerate(agents)}
    teams = teams_of(agents)
    if len(teams) > 1:
        out.update({f"{prefix}_team_{t}": agent_means[jnp.asarray(idx)].sum()
                    for t, idx in teams.items() if len(idx) > 1})
    return out


def make_greedy_eval(env: CTRolloutManager, apply_fn: Callable, initial_hidden: Callable,
                     num_steps: int, log_agents: bool = False, team: Optional[Sequence[int]] = None,
                     epsilon: float = 0.0) -> Callable[[jax.Array, object], Dict[str, jax.Array]]:
    """Greedy evaluation: reset ``env.batch_size`` envs, act greedily for at most ``num_steps`` steps (fewer
    when every env has finished an episode before), score the first episode each env finishes. Returns mean
    and std of team return over those episodes and their win rate (NaN where no env finished); with
    ``log_agents`` also each agent's and team's mean return (:func:`per_agent_metrics`). The team return sums
    the agents ``team`` (default: all). ``epsilon`` > 0 (TEST_EPSILON): ε-greedy over the available actions
    instead (a deterministic policy can stall for good in a deterministic world, e.g. two foragers each
    waiting at a different food item)."""

    def evaluate(rng, params):
        rng, k_reset = jax.random.split(rng)
        carry = reset_envs(env, k_reset, initial_hidden(env.batch_size))
        B = env.batch_size
        keys = jax.random.split(rng, num_steps)

        def unfinished(c):
            t, _, finished, _, _ = c
            return (t < num_steps) & ~jnp.all(finished)

        def step(c):
            t, carry, finished, ret, won = c
            hidden, q = apply_fn(params, carry.hidden, carry.obs[None], carry.first[None])
            k_env = keys[t]
            if epsilon > 0:   # (a Python float: the greedy program is unchanged at 0)
                k_env, k_act = jax.random.split(k_env)
                n = carry.avail.shape[0] * carry.avail.shape[1]
                flat = jax.vmap(epsilon_greedy, (0, 0, 0, None))(
                    jax.random.split(k_act, n), q[0].reshape(n, -1), carry.avail.reshape(n, -1), jnp.float32(epsilon))
                actions = flat.reshape(carry.avail.shape[:2])
            else:
                actions = greedy_actions(q[0], carry.avail)
            carry, (_, done, agent_return, won_t, _, _) = step_envs(env, k_env, carry, actions, hidden)
            new_first = done & ~finished
            ret = jnp.where(new_first[:, None], agent_return, ret)
            won = jnp.where(new_first, won_t, won)
            return t + 1, carry, finished | done, ret, won

        # stops once every env has finished an episode: the steps after that would change nothing it reports
        init = (jnp.int32(0), carry, jnp.zeros((B,), bool), jnp.zeros((B, env.num_agents)), jnp.zeros((B,), bool))
        _, _, finished, agent_ret, won = jax.lax.while_loop(unfinished, step, init)
        ret = (agent_ret if team is None else agent_ret[:, jnp.asarray(team)]).sum(-1)  # (B,) team return
        n = finished.sum()
        mean = jnp.where(n > 0, jnp.sum(jnp.where(finished, ret, 0.0)) / jnp.maximum(n, 1), jnp.nan)
        var = jnp.sum(jnp.where(finished, (ret - mean) ** 2, 0.0)) / jnp.maximum(n, 1)
        win = jnp.where(n > 0, jnp.sum(finished & won) / jnp.maximum(n, 1), jnp.nan)
        out = {"test_returned_episode_returns": mean,
               "test_returned_episode_returns_std": jnp.where(n > 0, jnp.sqrt(var), jnp.nan),
               "test_returned_won_episode": win}
        if log_agents:
            agent_means = jnp.sum(jnp.where(finished[:, None], agent_ret, 0.0), 0) / jnp.maximum(n, 1)
            agent_means = jnp.where(n > 0, agent_means, jnp.nan)
            out.update(per_agent_metrics("test_returned_episode_returns", agent_means, env.agents))
        return out

    return evaluate
