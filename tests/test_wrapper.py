"""Unit tests of :class:`purejaxql.utils.CTRolloutManager` on real JaxMARL environments.

Expected values are computed from the unwrapped environment and plain numpy, never from the wrapper.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl import make
from jaxmarl.environments.smax import map_name_to_scenario

from purejaxql.utils import CTRolloutManager, space_dim, stack_agents, unstack_agents

B = 4


def np_tree(x):
    return jax.tree_util.tree_map(np.asarray, x)


def env_index(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


# ---------------------------------------------------------------------------------------------------
# MPE simple spread: homogeneous agents
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spread():
    env = make("MPE_simple_spread_v3")
    wrapped = CTRolloutManager(env, B)
    key = jax.random.PRNGKey(0)
    obs, states = wrapped.batch_reset(key)
    k_act, k_step = jax.random.split(jax.random.PRNGKey(1))
    act_keys = jax.random.split(k_act, len(env.agents))
    actions = {a: wrapped.batch_sample(k, a) for a, k in zip(env.agents, act_keys)}
    step_out = wrapped.batch_step(k_step, states, actions)
    return dict(env=env, wrapped=wrapped, key=key, obs=np_tree(obs), states=states,
                actions=np_tree(actions), k_step=k_step, step_out=np_tree(step_out))


def test_spread_sizes(spread):
    env, w = spread["env"], spread["wrapped"]
    assert env.agents == ["agent_0", "agent_1", "agent_2"]
    assert w.num_agents == 3
    assert w.max_obs_length == 18
    assert w.obs_size == 18 + 3
    assert w.max_action_space == 5
    assert w.state_size == 3 * 18
    assert w.has_won is False


def test_obs_size_without_agent_id_is_the_padded_observation(spread):
    """Per-agent networks (``_ns``) observe without the agent id: obs_size is what the wrapper returns."""
    w = CTRolloutManager(spread["env"], 2, add_agent_id=False)
    obs, _ = w.batch_reset(jax.random.PRNGKey(0))
    assert w.obs_size == 18 and all(obs[a].shape == (2, w.obs_size) for a in w.agents)


def test_spread_batch_obs_shapes_and_agent_id(spread):
    obs, agents = spread["obs"], spread["env"].agents
    for i, a in enumerate(agents):
        assert obs[a].shape == (B, 18 + 3)
        one_hot = np.zeros(3)
        one_hot[i] = 1.0
        np.testing.assert_array_equal(obs[a][:, -3:], np.tile(one_hot, (B, 1)))
    assert obs["__all__"].shape == (B, 3 * 18)


def test_spread_wrapped_reset_matches_raw_reset(spread):
    env, w = spread["env"], spread["wrapped"]
    key = jax.random.PRNGKey(42)
    obs, state = w.wrapped_reset(key)
    raw_obs, raw_state = env.reset(key)
    raw_obs = np_tree(raw_obs)
    for i, a in enumerate(env.agents):
        np.testing.assert_allclose(np.asarray(obs[a])[:18], raw_obs[a], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(obs[a])[18:], np.eye(3)[i])
    np.testing.assert_allclose(np.asarray(obs["__all__"]),
                               np.concatenate([raw_obs[a] for a in env.agents]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.p_pos), np.asarray(raw_state.p_pos), atol=1e-6)


def test_spread_batch_reset_matches_raw_reset_per_env(spread):
    """batch_reset(key) resets env i with the i-th of split(key, B)."""
    env, obs = spread["env"], spread["obs"]
    keys = jax.random.split(spread["key"], B)
    for i in range(B):
        raw_obs = np_tree(env.reset(keys[i])[0])
        for a in env.agents:
            np.testing.assert_allclose(obs[a][i, :18], raw_obs[a], atol=1e-5)
        np.testing.assert_allclose(obs["__all__"][i],
                                   np.concatenate([raw_obs[a] for a in env.agents]), atol=1e-5)
    # the environments really are different
    assert not np.allclose(obs["__all__"][0], obs["__all__"][1])


def test_spread_batch_step_rewards_and_obs(spread):
    env, w = spread["env"], spread["wrapped"]
    obs, states, rewards, dones, infos = spread["step_out"]
    for a in env.agents:
        assert rewards[a].shape == (B,)
        assert obs[a].shape == (B, 21)
    assert rewards["__all__"].shape == (B,)
    expected = np.zeros(B)
    for a in env.agents:
        expected += rewards[a]
    np.testing.assert_allclose(rewards["__all__"], expected, rtol=1e-5, atol=1e-5)
    assert "won_episode" not in infos
    # obs["__all__"] after a step is still the concatenation of the agents' raw observations
    np.testing.assert_allclose(obs["__all__"],
                               np.concatenate([obs[a][:, :18] for a in env.agents], axis=1), atol=1e-6)

    # env i was stepped with the i-th of split(key, B): compare with the raw env
    keys = jax.random.split(spread["k_step"], B)
    for i in (0, B - 1):
        raw_obs, _, raw_rew, raw_dones, _ = env.step(
            keys[i], env_index(spread["states"], i),
            {a: jnp.asarray(spread["actions"][a][i]) for a in env.agents})
        for a in env.agents:
            assert float(raw_rew[a]) == pytest.approx(float(rewards[a][i]), abs=1e-5)
            np.testing.assert_allclose(obs[a][i, :18], np.asarray(raw_obs[a]), atol=1e-5)
        assert bool(raw_dones["__all__"]) == bool(dones["__all__"][i])


def test_global_reward_sums_training_agents_only(spread):
    env = spread["env"]
    w = CTRolloutManager(env, 2, training_agents=["agent_0", "agent_2"])
    rewards = {"agent_0": jnp.array([1.0, 2.0]), "agent_1": jnp.array([10.0, 20.0]),
               "agent_2": jnp.array([0.5, -3.0])}
    np.testing.assert_allclose(np.asarray(w.global_reward(rewards)), [1.5, -1.0])
    np.testing.assert_allclose(np.asarray(spread["wrapped"].global_reward(rewards)), [11.5, 19.0])


def test_stack_unstack_roundtrip():
    agents = ["b", "a", "c"]
    rng = np.random.default_rng(0)
    x = {a: rng.normal(size=(4, 2)).astype(np.float32) for a in agents}
    stacked = np.asarray(stack_agents(x, agents))
    assert stacked.shape == (4, 3, 2)
    for i, a in enumerate(agents):
        np.testing.assert_array_equal(stacked[:, i], x[a])
    back = unstack_agents(jnp.asarray(stacked), agents)
    for a in agents:
        np.testing.assert_array_equal(np.asarray(back[a]), x[a])


# ---------------------------------------------------------------------------------------------------
# MPE speaker-listener: heterogeneous agents
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speaker():
    env = make("MPE_simple_speaker_listener_v4")
    wrapped = CTRolloutManager(env, B)
    obs, states = wrapped.batch_reset(jax.random.PRNGKey(3))
    return dict(env=env, wrapped=wrapped, obs=np_tree(obs), states=states)


def test_speaker_listener_sizes(speaker):
    env, w = speaker["env"], speaker["wrapped"]
    assert env.agents == ["speaker_0", "listener_0"]
    assert [space_dim(env.observation_space(a)) for a in env.agents] == [3, 11]
    assert [space_dim(env.action_space(a)) for a in env.agents] == [3, 5]
    assert w.max_obs_length == 11
    assert w.max_action_space == 5
    assert w.obs_size == 11 + 2
    assert w.state_size == 3 + 11


def test_speaker_listener_padding(speaker):
    env, w = speaker["env"], speaker["wrapped"]
    key = jax.random.PRNGKey(7)
    obs = np_tree(w.wrapped_reset(key)[0])
    raw = np_tree(env.reset(key)[0])
    sp, li = obs["speaker_0"], obs["listener_0"]
    assert sp.shape == li.shape == (13,)
    np.testing.assert_allclose(sp[:3], raw["speaker_0"], atol=1e-6)
    assert np.any(raw["speaker_0"] != 0)            # the zeros below are padding, not data
    np.testing.assert_array_equal(sp[3:11], np.zeros(8))
    np.testing.assert_array_equal(sp[11:], [1.0, 0.0])
    np.testing.assert_allclose(li[:11], raw["listener_0"], atol=1e-6)
    np.testing.assert_array_equal(li[11:], [0.0, 1.0])
    np.testing.assert_allclose(obs["__all__"],
                               np.concatenate([raw["speaker_0"], raw["listener_0"]]), atol=1e-6)
    # batched too
    bo = speaker["obs"]
    assert bo["speaker_0"].shape == (B, 13)
    np.testing.assert_array_equal(bo["speaker_0"][:, 3:11], 0.0)
    np.testing.assert_array_equal(bo["speaker_0"][:, 11:], np.tile([1.0, 0.0], (B, 1)))
    np.testing.assert_array_equal(bo["listener_0"][:, 11:], np.tile([0.0, 1.0], (B, 1)))


def test_speaker_listener_valid_actions(speaker):
    w = speaker["wrapped"]
    avail = np_tree(w.get_valid_actions(speaker["states"]))
    assert avail["speaker_0"].shape == (B, 5)
    np.testing.assert_array_equal(avail["speaker_0"], np.tile([1, 1, 1, 0, 0], (B, 1)))
    np.testing.assert_array_equal(avail["listener_0"], np.ones((B, 5)))


def test_speaker_listener_batch_sample_respects_availability(speaker):
    w = speaker["wrapped"]
    K = 500
    keys = jax.random.split(jax.random.PRNGKey(5), K)
    # with an explicit availability mask (B, A), every row different
    mask = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 1, 0, 1, 0], [1, 1, 1, 1, 1]], np.float32)
    sample_all = jax.jit(jax.vmap(lambda k: (w.batch_sample(k, "speaker_0"),
                                             w.batch_sample(k, "listener_0"),
                                             w.batch_sample(k, "listener_0", mask))))
    sp, li, masked = np_tree(sample_all(keys))
    assert sp.shape == li.shape == masked.shape == (K, B)
    assert set(np.unique(sp)) == {0, 1, 2}
    assert set(np.unique(li)) == {0, 1, 2, 3, 4}
    for b in range(B):
        assert set(np.unique(masked[:, b])) == set(np.flatnonzero(mask[b]))


# ---------------------------------------------------------------------------------------------------
# SMAX: world state, available actions, won episodes
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smax():
    env = make("HeuristicEnemySMAX", scenario=map_name_to_scenario("3m"))
    wrapped = CTRolloutManager(env, B)
    obs, states = wrapped.batch_reset(jax.random.PRNGKey(11))
    avail = wrapped.get_valid_actions(states)
    keys = jax.random.split(jax.random.PRNGKey(12), len(env.agents) + 1)
    actions = {a: wrapped.batch_sample(k, a, avail[a]) for a, k in zip(env.agents, keys)}
    step_out = wrapped.batch_step(keys[-1], states, actions)
    return dict(env=env, wrapped=wrapped, obs=np_tree(obs), states=states, avail=np_tree(avail),
                actions=np_tree(actions), step_out=step_out)


def test_smax_world_state(smax):
    env, w = smax["env"], smax["wrapped"]
    key = jax.random.PRNGKey(13)
    obs, state = w.wrapped_reset(key)
    raw_obs, raw_state = env.reset(key)
    np.testing.assert_allclose(np.asarray(obs["__all__"]), np.asarray(raw_obs["world_state"]),
                               atol=1e-6)
    assert w.state_size == np.asarray(raw_obs["world_state"]).size
    for i, a in enumerate(env.agents):
        raw = np.asarray(raw_obs[a])
        np.testing.assert_allclose(np.asarray(obs[a])[:raw.size], raw, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(obs[a])[-3:], np.eye(3)[i])
    # batched reset: every env's state is a world state of the right size, and envs differ
    assert smax["obs"]["__all__"].shape == (B, w.state_size)
    assert not np.allclose(smax["obs"]["__all__"][0], smax["obs"]["__all__"][1])


def test_smax_valid_actions_match_env(smax):
    env, w = smax["env"], smax["wrapped"]
    for states in (smax["states"], smax["step_out"][1]):
        got = np_tree(w.get_valid_actions(states))
        raw = np_tree(jax.vmap(env.get_avail_actions)(states))
        for a in env.agents:
            n = raw[a].shape[-1]
            assert got[a].shape == (B, w.max_action_space)
            np.testing.assert_array_equal(got[a][:, :n], raw[a].astype(np.float32))
            np.testing.assert_array_equal(got[a][:, n:], 0.0)
    # at reset some action is unavailable (e.g. attacking out-of-range enemies), so it is not
    # the trivial all-ones mask
    assert any(np.any(smax["avail"][a] == 0) for a in env.agents)
    # sampled actions respected the mask
    for a in env.agents:
        assert np.all(smax["avail"][a][np.arange(B), smax["actions"][a]] == 1)


def test_smax_infos_and_rewards(smax):
    env = smax["env"]
    _, _, rewards, dones, infos = np_tree(smax["step_out"])
    assert "won_episode" in infos
    assert infos["won_episode"].shape == (B,)
    assert infos["won_episode"].dtype == np.bool_
    # no battle is won on the very first step
    assert not infos["won_episode"].any()
    np.testing.assert_allclose(rewards["__all__"], sum(rewards[a] for a in env.agents), atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# continuous actions are rejected
# ---------------------------------------------------------------------------------------------------
def test_continuous_action_env_rejected():
    env = make("MPE_simple_spread_v3", action_type="Continuous")
    assert not hasattr(env.action_space(env.agents[0]), "n")
    with pytest.raises(ValueError, match="discrete actions"):
        CTRolloutManager(env, 2)


def test_hanabi_legal_moves_are_the_available_actions():
    """Hanabi has no get_avail_actions but get_legal_moves: that mask is what exploration, greedy play and the
    target's max see (with every action available, agents would play illegal moves)."""
    env = make("hanabi")
    w = CTRolloutManager(env, batch_size=3)
    _, states = w.batch_reset(jax.random.PRNGKey(0))
    avail = w.get_valid_actions(states)
    legal = jax.vmap(env.get_legal_moves)(states)
    for a in env.agents:
        np.testing.assert_array_equal(np.asarray(avail[a]), np.asarray(legal[a], np.float32))
    assert 0 < float(avail["agent_0"].sum()) < avail["agent_0"].size   # some moves legal, some not
