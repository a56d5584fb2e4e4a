"""Replay alignment: episodes run across update boundaries, `first` / `dones` / stored hidden states
line up with the true episode structure, and a memory task that needs the stored hidden state is learned."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import RecallGame
from purejaxql import iql_ps

L, T, B = 5, 3, 4  # episode length 5 is not a multiple of NUM_STEPS 3: episodes straddle updates


@pytest.fixture(scope="module")
def filled_buffer():
    cfg = dict(NUM_ENVS=B, NUM_STEPS=T, TOTAL_TIMESTEPS=B * T * 8, BUFFER_SIZE=B * 16,
               BUFFER_BATCH_SIZE=4, AGENT_HIDDEN_DIM=8, TEST_DURING_TRAINING=False,
               LEARNING_STARTS=B * T * 8 - 1, TARGET_UPDATE_INTERVAL=1)  # learning only in the last update
    train = iql_ps.make_train(cfg, RecallGame(L))
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    runner, _ = jax.jit(train.run)(runner, jnp.arange(8))
    exp = jax.tree.map(np.asarray, runner.buffer.experience)
    return train, runner, jax.tree.map(lambda x: x[:, :8], exp)  # (B, 8 chunks, ...)


def test_stored_steps_follow_the_episodes(filled_buffer):
    _, _, exp = filled_buffer
    t = np.rint(exp.obs[..., 0, 1] * L).astype(int).reshape(B, -1)     # (B, 8*T) time in episode
    first = exp.first.reshape(B, -1)
    dones = exp.dones.reshape(B, -1)
    rewards = exp.rewards.reshape(B, -1, 2)
    np.testing.assert_array_equal(t, np.tile(np.arange(8 * T) % L, (B, 1)))  # no cut at updates
    np.testing.assert_array_equal(first, t == 0)                             # first = episode start
    np.testing.assert_array_equal(dones, t == L - 1)                         # done = episode end
    np.testing.assert_array_equal(exp.timeout.reshape(B, -1), t == L - 1)    # ended by max_steps
    assert np.all(rewards[t != L - 1] == 0)


def test_stored_hidden_state_is_the_actor_state(filled_buffer):
    train, _, exp = filled_buffer
    params = jax.jit(train.init)(jax.random.PRNGKey(0)).train.params["agent"]  # the acting params
    np.testing.assert_array_equal(exp.hidden[:, 0], 0.0)
    for k in range(7):
        obs = jnp.swapaxes(exp.obs[:, k], 0, 1)          # (T, B, N, D)
        first = jnp.swapaxes(exp.first[:, k], 0, 1)      # (T, B)
        h_end, _ = train.agents.apply(params, exp.hidden[:, k], obs, first)
        np.testing.assert_allclose(h_end, exp.hidden[:, k + 1], atol=1e-6)
        assert np.abs(exp.hidden[:, k + 1]).max() > 0    # a real carried state, not zeros


@pytest.mark.timeout(400)
def test_gru_learns_a_cue_it_must_remember_across_updates():
    """The cue is seen only at t=0 and must be answered at t=4; with NUM_STEPS=3 no stored sequence
    holds both the cue and the last step from a zero state, so only a correctly stored hidden state
    lets the learner solve it (a learner restarting from zeros stays at the random team return 1.0)."""
    cfg = dict(NUM_ENVS=16, NUM_STEPS=T, TOTAL_TIMESTEPS=3e4, BUFFER_SIZE=512, BUFFER_BATCH_SIZE=32,
               AGENT_HIDDEN_DIM=32, EPSILON_START=1.0, EPSILON_FINISH=0.1, EPSILON_ANNEAL_TIME=9e3,
               LR=0.003, TARGET_UPDATE_INTERVAL=10, GAMMA=0.9, LEARNING_STARTS=0, TEST_NUM_ENVS=64,
               TEST_INTERVAL=0.1, MAX_GRAD_NORM=10)
    train = jax.jit(jax.vmap(iql_ps.make_train(cfg, RecallGame(L))))
    out = train(jax.random.split(jax.random.PRNGKey(0), 2))
    final = np.asarray(out["metrics"]["test_returned_episode_returns"][:, -1])
    assert final.mean() >= 1.75, final  # 2.0 = both agents always right, 1.0 = guessing
