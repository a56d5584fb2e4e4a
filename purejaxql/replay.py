"""Replay for the replay learners (purejaxql.q_learning): the flashbax trajectory buffer of chunks, sampled
uniformly or by priority (PER), and the running reward statistics of REW_NORM.

Shapes: B NUM_ENVS, Bs BUFFER_BATCH_SIZE, T NUM_STEPS, N agents that learn.

Items are pairs of consecutive chunks of one env (see q_learning's "Replay layout"). With ``PER=True``
(prioritised experience replay, Schaul et al. 2016) item i is drawn with probability
P(i) = p_i^α / Σ_j p_j^α (α = PER_ALPHA), a new item enters at the largest priority recorded so far, and
after each gradient step the sampled items get the priority of their TD errors δ over the T steps of the
sequence (and the agents, for IQL), as pymarl2 and R2D2 mix them (η = PER_ETA):
    p_i = η · max_t |δ_{t}| + (1 - η) · mean_t |δ_{t}| + 1e-6        (steps left out of the loss excluded)
The bias of prioritised sampling is corrected by importance weights on each sequence's loss,
    w_i = (P(i) / min_j P(j))^(-β)   (= (M · P(i))^(-β) / max_j (M · P(j))^(-β) over the sampled batch),
with β annealed linearly from PER_BETA to 1 over TOTAL_TIMESTEPS.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import chex
import flashbax as fbx
import jax
import jax.numpy as jnp

__all__ = ["Replay", "make_replay", "sequence_priorities", "importance_weights", "RewardStats", "update_reward_stats",
           "standardise"]

PRIORITY_FLOOR = 1e-6  # keeps every stored sequence drawable


class Replay(NamedTuple):
    """The buffer (``buffer.init`` / ``buffer.add`` as flashbax's) and how it is sampled."""
    buffer: Any
    prioritised: bool

    def sample(self, state, rng: jax.Array, beta) -> Tuple[Any, Optional[jax.Array], Optional[jax.Array]]:
        """-> (items (Bs, 2, ...), their indices (Bs,) and importance weights (Bs,); None, None when uniform)."""
        batch = self.buffer.sample(state, rng)
        if not self.prioritised:
            return batch.experience, None, None
        return batch.experience, batch.indices, importance_weights(batch.probabilities, beta)

    def set_priorities(self, state, indices: Optional[jax.Array], priorities: jax.Array):
        """Write the sampled items' new priorities (no-op when uniform)."""
        return state if not self.prioritised else self.buffer.set_priorities(state, indices, priorities)

    def priorities_of(self, state):
        """The part of a buffer state that learning changes: the sum tree of priorities (None when uniform).
        Learning carries only this through its loops, never the stored experience."""
        return state.sum_tree_state if self.prioritised else None

    def with_priorities(self, state, tree):
        """``state`` with the sum tree ``tree`` (from :meth:`priorities_of`)."""
        return state.replace(sum_tree_state=tree) if self.prioritised else state


def make_replay(cfg, num_envs: int) -> Replay:
    """Chunk-pair items for ``num_envs`` envs, BUFFER_SIZE sequences in all; prioritised with PER."""
    kwargs = dict(add_batch_size=num_envs, sample_batch_size=cfg["BUFFER_BATCH_SIZE"], sample_sequence_length=2,
                  period=1, min_length_time_axis=2, max_length_time_axis=cfg["BUFFER_SIZE"] // num_envs)
    if not cfg.get("PER", False):
        return Replay(fbx.make_trajectory_buffer(**kwargs), False)
    device = "tpu" if jax.default_backend() == "tpu" else "cpu"  # flashbax: "cpu" also serves GPUs
    return Replay(fbx.make_prioritised_trajectory_buffer(**kwargs, priority_exponent=cfg["PER_ALPHA"], device=device),
                  True)


def sequence_priorities(delta: jax.Array, mask: Optional[jax.Array], eta: float) -> jax.Array:
    """TD errors δ (T, Bs) or (T, Bs, N), mask (T, Bs) of the steps in the loss (None: all) -> (Bs,):
    η · max |δ| + (1 - η) · mean |δ| over each sequence's steps (and agents), plus a small floor."""
    chex.assert_rank(delta, {2, 3})
    err = jnp.abs(delta).reshape(delta.shape[0], delta.shape[1], -1)        # (T, Bs, N or 1)
    m = jnp.ones(err.shape[:2]) if mask is None else mask
    m = jnp.broadcast_to(m[..., None], err.shape)
    biggest = jnp.max(err * m, axis=(0, 2))
    mean = jnp.sum(err * m, axis=(0, 2)) / jnp.maximum(jnp.sum(m, axis=(0, 2)), 1.0)
    return eta * biggest + (1.0 - eta) * mean + PRIORITY_FLOOR


def importance_weights(probabilities: jax.Array, beta) -> jax.Array:
    """(Bs,) sampling probabilities -> (Bs,) weights (P(i) / min_j P(j))^(-β), the largest = 1."""
    return (probabilities / jnp.min(probabilities)) ** (-beta)


class RewardStats(NamedTuple):
    """Running mean and variance of the rewards the loss learns from (REW_NORM): scalars for a team reward,
    (N,) for independent learners."""
    mean: jax.Array
    var: jax.Array
    count: jax.Array


def update_reward_stats(stats: RewardStats, rewards: jax.Array) -> RewardStats:
    """Fold a batch of rewards (..., K), K = the stats' size (1 for a team reward), into the running moments
    (Chan et al.'s parallel update of mean and variance)."""
    x = rewards.reshape(-1, rewards.shape[-1])
    n = x.shape[0]
    batch_mean, batch_var = x.mean(0), x.var(0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + delta ** 2 * stats.count * n / total
    return RewardStats(mean=mean, var=m2 / total, count=total)


def standardise(stats: RewardStats, rewards: jax.Array, team: bool) -> jax.Array:
    """Per-agent rewards (..., N) -> rewards whose team sum (``team``) or each agent's own reward is
    (r - mean) / std under ``stats``. For a team reward each agent's r_i becomes (r_i - mean / N) / std, so
    their sum is the standardised team reward."""
    std = jnp.sqrt(stats.var + 1e-8)
    if team:
        return (rewards - stats.mean / rewards.shape[-1]) / std
    return (rewards - stats.mean) / std
