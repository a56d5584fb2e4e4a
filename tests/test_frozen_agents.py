"""Frozen pretrained agents act greedily *in the training rollout*, for all four ``*_ps_pretrained`` modules.

On EchoGame every agent observes the previous joint action, so the data the learner trains on (the replay
buffer's stored observations; PQN's context window of the last rollout) reveals what the frozen agent did
at each step. With ε = 1 the learning agents act at random, so a frozen agent that explored like them
would be caught: each of its actions must be the greedy available action of its own network on its own
observation.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import EchoGame
from purejaxql import iql_ps_pretrained, pqn_ps_pretrained, qmix_ps_pretrained, vdn_ps_pretrained
from purejaxql.networks import AgentNetwork, SharedAgents

ENV = EchoGame()
N, A, RAW = ENV.num_agents, ENV.num_actions, ENV.obs_len
FROZEN = 2  # agent_2 is frozen; agent_0 and agent_1 learn
NET = AgentNetwork(action_dim=A, hidden_dim=16, recurrent=False, num_layers=1)
PARAMS = SharedAgents(NET, 1, RAW + N).init(jax.random.PRNGKey(42))   # its input has the agent id

T, B = 8, 4
REPLAY = dict(NUM_ENVS=B, NUM_STEPS=T, TOTAL_TIMESTEPS=B * T * 3, BUFFER_SIZE=64, BUFFER_BATCH_SIZE=2,
              AGENT_HIDDEN_DIM=8, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=1, TEST_NUM_ENVS=2,
              EPSILON_START=1.0, EPSILON_FINISH=1.0)
PQN = dict(NUM_ENVS=B, NUM_STEPS=T, TOTAL_TIMESTEPS=B * T * 3, NUM_EPOCHS=1, NUM_MINIBATCHES=2,
           AGENT_HIDDEN_DIM=8, TEST_NUM_ENVS=2, EPSILON_START=1.0, EPSILON_FINISH=1.0, AGENT_TYPE="rnn",
           MEMORY_WINDOW=T)  # the context window then holds the whole last rollout


def check_frozen_agent_was_greedy(obs):
    """obs (L, B, Nt, D): consecutive observations of a learning agent. The previous joint action in
    obs[t+1] shows the frozen agent's action at t; it must be argmax of its network over its available
    actions ((t + FROZEN) mod A is not available) at obs[t] with its own id."""
    obs = np.asarray(obs)[:, :, 0, :RAW]                                        # (L, B, RAW), same for all
    x = np.concatenate([obs, np.broadcast_to(np.eye(N)[FROZEN], obs.shape[:2] + (N,))], -1)
    _, q = NET.apply(PARAMS, jnp.zeros((obs.shape[1], NET.hidden_dim)), jnp.asarray(x),
                     jnp.zeros(obs.shape[:2], bool))
    t_in = np.rint(obs[..., RAW - 2] * ENV.max_steps).astype(int)              # step of each observation
    avail = 1.0 - np.eye(A)[(t_in + FROZEN) % A]
    greedy = np.where(avail > 0, np.asarray(q), -np.inf).argmax(-1)            # (L, B)
    taken = obs[1:, :, FROZEN * A:(FROZEN + 1) * A].argmax(-1)                  # (L-1, B) shown at t+1
    same_episode = t_in[1:] > 0
    assert same_episode.sum() >= 10
    np.testing.assert_array_equal(taken[same_episode], greedy[:-1][same_episode])


@pytest.mark.parametrize("module", [iql_ps_pretrained, vdn_ps_pretrained, qmix_ps_pretrained, pqn_ps_pretrained],
                         ids=["iql", "vdn", "qmix", "pqn"])
def test_frozen_agent_acts_greedily_in_the_training_rollout(module):
    pqn = module is pqn_ps_pretrained
    train = module.make_train(PQN if pqn else REPLAY, ENV, {f"agent_{FROZEN}": PARAMS})
    out = jax.jit(train)(jax.random.PRNGKey(0))
    m = jax.tree.map(np.asarray, out["metrics"])
    assert np.isfinite(m["loss"][-1]) and np.isfinite(m["test_returned_episode_returns"][-1])
    runner = out["runner_state"]
    if pqn:  # (W = T, B, Nt, D): the last rollout's observations
        obs = runner.context.obs
    else:    # the buffer's chunks in time order: (B, updates, T, Nt, D) -> (updates * T, B, Nt, D)
        exp = runner.buffer.experience.obs[:, :train.config["NUM_UPDATES"]]
        obs = np.asarray(exp).reshape(B, -1, *exp.shape[-2:]).swapaxes(0, 1)
    check_frozen_agent_was_greedy(obs)
    # the frozen agent's parameters are the given ones, untouched by training
    (i, _, frozen, _), = train.agents.frozen
    assert i == FROZEN
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(PARAMS)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
