"""Prioritised replay (PER) and reward standardisation (REW_NORM) in the replay loop: the priority statistic
and importance weights against plain loops, priorities written back after a gradient step, sampling
frequencies, the running reward moments, and an exact resume through a state checkpoint."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flashbax.buffers import sum_tree

from envs import EchoGame
from purejaxql import iql_ps, qmix_ps
from purejaxql.checkpoint import load_state, save_state
from purejaxql.config import ConfigError
from purejaxql.replay import (PRIORITY_FLOOR, RewardStats, importance_weights, make_replay, sequence_priorities,
                              standardise, update_reward_stats)

ENV = EchoGame()
TINY = dict(NUM_ENVS=4, NUM_STEPS=6, TOTAL_TIMESTEPS=4 * 6 * 8, BUFFER_SIZE=32, BUFFER_BATCH_SIZE=6,
            AGENT_HIDDEN_DIM=8, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=2, TEST_NUM_ENVS=2, TEST_INTERVAL=0.5,
            MIXER_EMBEDDING_DIM=4, MIXER_HYPERNET_HIDDEN_DIM=8, EPSILON_ANNEAL_TIME=50, NUM_EPOCHS=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("agents", [None, 3])
def test_sequence_priority_is_the_mixed_max_and_mean_of_the_unmasked_errors(agents):
    rng = np.random.default_rng(0)
    T, Bs, eta = 7, 5, 0.9
    delta = rng.normal(size=(T, Bs) + ((agents,) if agents else ())).astype(np.float32)
    mask = (rng.random((T, Bs)) > 0.3).astype(np.float32)
    mask[:, 2] = 0.0  # a sequence with every step left out: only the floor remains
    got = np.asarray(sequence_priorities(jnp.asarray(delta), jnp.asarray(mask), eta))
    for b in range(Bs):
        errs = [abs(float(x)) for t in range(T) if mask[t, b] for x in np.atleast_1d(delta[t, b])]
        want = (eta * max(errs) + (1 - eta) * sum(errs) / len(errs) if errs else 0.0) + PRIORITY_FLOOR
        assert got[b] == pytest.approx(want, rel=1e-5)
    no_mask = np.asarray(sequence_priorities(jnp.asarray(delta), None, eta))
    flat = np.abs(delta).reshape(T, Bs, -1)
    np.testing.assert_allclose(no_mask, eta * flat.max((0, 2)) + (1 - eta) * flat.mean((0, 2)) + PRIORITY_FLOOR,
                               rtol=1e-5)


@pytest.mark.timeout(60)
def test_importance_weights_are_relative_to_the_least_likely_sample():
    p = np.array([0.1, 0.4, 0.05, 0.2], np.float32)
    got = np.asarray(importance_weights(jnp.asarray(p), 0.6))
    np.testing.assert_allclose(got, [(x / 0.05) ** -0.6 for x in p], rtol=1e-6)
    assert got.max() == pytest.approx(1.0)


@pytest.mark.timeout(120)
def test_sampling_frequencies_follow_the_priorities():
    """64 items with known priorities, 40,000 draws: a χ² goodness-of-fit statistic below the 0.1 % critical
    value of its 63 degrees of freedom (103.4) against P(i) = p_i^α / Σ p^α. Uniform sampling of the same
    items scores in the thousands, so the test separates the two by a wide margin."""
    cfg = dict(BUFFER_BATCH_SIZE=400, BUFFER_SIZE=2 * 33, PER=True, PER_ALPHA=0.6)
    replay = make_replay(cfg, num_envs=2)
    state = replay.buffer.init(jnp.zeros((3,)))
    state = replay.buffer.add(state, jnp.zeros((2, 33, 3)))   # 2 envs x 32 start positions = 64 items
    items = np.array([env * 33 + t for env in range(2) for t in range(32)])  # item index: env row of 33 slots
    priorities = jnp.linspace(0.1, 3.0, 64) ** 2
    state = replay.buffer.set_priorities(state, jnp.asarray(items), priorities)
    draw = jax.jit(lambda k: replay.sample(state, k, 0.4)[1])
    drawn = np.concatenate([np.asarray(draw(k)) for k in jax.random.split(jax.random.PRNGKey(0), 100)])
    assert set(drawn) <= set(items)
    counts = np.array([(drawn == i).sum() for i in items])
    p = np.asarray(priorities, np.float64) ** 0.6
    expected = counts.sum() * p / p.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 103.4, chi2
    uniform = counts.sum() / 64
    assert float(((counts - uniform) ** 2 / uniform).sum()) > 1000


@pytest.fixture(scope="module")
def per_program():
    return qmix_ps.make_train({**TINY, "PER": True, "REW_NORM": True, "TD_LAMBDA": 0.5}, ENV)


@pytest.mark.timeout(240)
def test_priorities_written_back_are_the_recomputed_td_error_statistic(per_program):
    """One learning stage (two epochs) on a filled buffer: the sum tree then holds, at the items the second
    epoch sampled, (η max|δ| + (1-η) mean|δ| + floor)^α of the TD errors recomputed for that sample with the
    parameters before that epoch's step."""
    P = per_program.parts
    runner = jax.jit(per_program.init)(jax.random.PRNGKey(1))
    update = jax.jit(P.update)
    for u in range(4):
        runner, _ = update(runner, jnp.int32(u))
    rng = jax.random.PRNGKey(5)
    train, tree, _, _ = jax.jit(P.learn)(runner.train, runner.buffer, rng)
    cfg = per_program.config
    beta = cfg["PER_BETA"] + (1 - cfg["PER_BETA"]) * int(runner.train.timesteps) / cfg["TOTAL_TIMESTEPS"]

    @jax.jit
    def by_hand(train_state):
        k1, k2 = jax.random.split(rng, cfg["NUM_EPOCHS"])
        state = runner.buffer
        items, idx, w = P.replay.sample(state, k1, beta)
        ts, _, pr = P.learn_step(train_state, P.sequences(items), w)
        state = P.replay.set_priorities(state, idx, pr)
        items, idx, w = P.replay.sample(state, k2, beta)
        _, (_, pr2) = P.loss(ts.params, ts.target_params, P.sequences(items), w, ts.reward_stats)
        return idx, pr2
    idx, pr = by_hand(runner.train)
    stored = np.asarray(sum_tree.get_batch(tree, idx))
    np.testing.assert_allclose(stored, np.asarray(pr) ** cfg["PER_ALPHA"], rtol=1e-5)
    assert len(np.unique(np.asarray(pr))) > 1
    assert int(train.grad_steps) == int(runner.train.grad_steps) + 2


@pytest.mark.timeout(240)
@pytest.mark.parametrize("module,team", [(qmix_ps, True), pytest.param(iql_ps, False, marks=pytest.mark.slow)],
                         ids=["team", "per-agent"])
def test_reward_statistics_are_the_moments_of_every_reward_collected(module, team):
    cfg = {k: v for k, v in TINY.items() if team or not k.startswith("MIXER_")}
    program = module.make_train({**cfg, "REW_NORM": True}, ENV)
    out = jax.jit(program)(jax.random.PRNGKey(2))
    stats = out["runner_state"].train.reward_stats
    # the rewards of every rollout, oldest first: the buffer holds all 8 chunks (it never wrapped)
    rewards = np.asarray(out["runner_state"].buffer.experience.rewards, np.float64)   # (B, 8, T, N)
    learnt = rewards.sum(-1, keepdims=True) if team else rewards
    flat = learnt.reshape(-1, learnt.shape[-1])
    n0 = 1e-4  # the prior count: mean 0, variance 1
    mean = flat.sum(0) / (flat.shape[0] + n0)
    var = (n0 * (1.0 + mean ** 2) + ((flat - mean) ** 2).sum(0)) / (flat.shape[0] + n0)
    np.testing.assert_allclose(np.asarray(stats.mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), var, rtol=1e-3)
    assert float(stats.count) == pytest.approx(flat.shape[0] + n0)
    # the loss sees standardised rewards: the team sum (or each agent's own) is (r - mean) / std
    r = jnp.asarray(rewards[0, 0], jnp.float32)                                          # (T, N)
    s = np.asarray(standardise(stats, r, team))
    got = s.sum(-1, keepdims=True) if team else s
    want = (np.asarray(r).sum(-1, keepdims=True) if team else np.asarray(r)) - np.asarray(stats.mean)
    np.testing.assert_allclose(got, want / np.sqrt(np.asarray(stats.var) + 1e-8), rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(60)
def test_running_moments_merge_batches_exactly():
    rng = np.random.default_rng(3)
    batches = [rng.normal(2.0, 3.0, size=(n, 2)) for n in (5, 17, 1, 40)]
    stats = RewardStats(jnp.zeros(2), jnp.ones(2), jnp.float32(1e-4))
    for b in batches:
        stats = update_reward_stats(stats, jnp.asarray(b, jnp.float32))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(np.asarray(stats.mean), allx.mean(0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(stats.var), allx.var(0), rtol=1e-3)


@pytest.mark.timeout(300)
def test_resume_through_a_state_checkpoint_is_exact_with_per_and_rew_norm(per_program, tmp_path):
    """Priorities (the sum tree), the reward statistics and the buffer round-trip through save_state /
    load_state: 4 updates, checkpoint, 4 more equals 4 + 4 carried in memory (a chunked run equals one
    program: tests/test_determinism.py)."""
    run = jax.jit(per_program.run)
    half, _ = run(jax.jit(per_program.init)(jax.random.PRNGKey(4)), jnp.arange(4))
    straight, m_straight = run(half, jnp.arange(4, 8))
    path = save_state(tmp_path, half, {}, 4, {"module": "qmix_ps"}, keep=1)
    loaded, _, _ = load_state(path, half)
    resumed, m_rest = run(loaded, jnp.arange(4, 8))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(m_straight["loss"]), np.asarray(m_rest["loss"]))
    assert np.isfinite(np.asarray(m_rest["loss"])).all()
    assert float(jnp.abs(half.buffer.sum_tree_state.nodes).sum()) > 0  # priorities were written


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key,value", [("PER", True), ("REW_NORM", True), ("TD_LAMBDA", 0.5), ("PER_ALPHA", 0.5)])
def test_replay_keys_given_to_pqn_name_the_reason(key, value):
    from purejaxql import pqn_ps
    with pytest.raises(ConfigError, match=f"'{key}' is not used by pqn.*no replay buffer"):
        pqn_ps.make_train({key: value}, ENV)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key,value", [("TD_LAMBDA", 1.5), ("TD_LAMBDA", -0.1), ("PER_ALPHA", 2.0),
                                       ("PER_BETA", -1.0), ("PER_ETA", 1.1), ("PER", "yes")])
def test_out_of_range_replay_options_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        qmix_ps.make_train({key: value}, ENV)
