"""REW_SHAPING_HORIZON (JaxMARL's Overcooked reward shaping): the env's shaped reward
(``infos["shaped_reward"]``) joins the reward the loss learns from with a weight annealed linearly from 1 to 0
over the horizon; the logged returns stay the env's own; both loops log the weight and the shaped reward.
An env without a shaped reward refuses the key. On Overcooked the wrapper hands on the env's own values.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import EchoGame
from purejaxql import pqn_ps, vdn_ps
from purejaxql.config import ConfigError
from purejaxql.environments import CTRolloutManager, make_env, stack_agents


class ShapedEcho(EchoGame):
    """EchoGame that also pays agent i a shaped reward of 2 + i + t / 10 (t: the step that ends)."""

    def step_env(self, key, state, actions):
        obs, new, rewards, dones, infos = super().step_env(key, state, actions)
        shaped = {a: 2.0 + i + new.t / 10.0 for i, a in enumerate(self.agents)}
        return obs, new, rewards, dones, {**infos, "shaped_reward": shaped}


SMALL = dict(NUM_ENVS=4, NUM_STEPS=6, TOTAL_TIMESTEPS=4 * 6 * 8, AGENT_TYPE="ff", AGENT_HIDDEN_DIM=16,
             BUFFER_SIZE=32, BUFFER_BATCH_SIZE=4, LEARNING_STARTS=0, TEST_NUM_ENVS=2, TEST_INTERVAL=0.5,
             TARGET_UPDATE_INTERVAL=2)
HORIZON = 4 * 6 * 5   # the weight reaches 0 after 5 of the 8 updates


def test_the_stored_rewards_add_the_weighted_shaped_reward_and_the_returns_do_not():
    env = ShapedEcho()
    train = vdn_ps.make_train({**SMALL, "REW_SHAPING_HORIZON": HORIZON}, env)
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    roll = jax.jit(lambda w: train.parts.rollout(runner.train.params["agent"], runner.env, 0.5,
                                                 jax.random.PRNGKey(1), w))
    plain = roll(None)
    for w in (1.0, 0.25):
        shaped_run = roll(jnp.float32(w))
        chunk, plain_chunk = shaped_run[1], plain[1]
        np.testing.assert_array_equal(chunk.actions, plain_chunk.actions)   # same key, same acting
        shaped = np.swapaxes(np.asarray(shaped_run[4]), 0, 1)                # (T, B, N) -> (B, T, N)
        t = np.rint(np.asarray(chunk.obs[..., 0, EchoGame().obs_len - 2]) * env.max_steps)  # t of each obs
        want_shaped = 2.0 + np.arange(3) + ((t + 1) / 10.0)[..., None]      # paid on the step after obs t
        np.testing.assert_allclose(shaped, want_shaped, rtol=1e-6)
        np.testing.assert_allclose(chunk.rewards, plain_chunk.rewards + w * shaped, rtol=1e-6)
        assert shaped_run[2]["returned_episode_returns"] == plain[2]["returned_episode_returns"]  # env's own
        assert shaped_run[3] > 0   # episodes ended in the rollout
    assert float(np.abs(np.asarray(plain[4])).max()) == 0.0   # no shaping: no shaped reward reported


@pytest.mark.parametrize("module", [vdn_ps, pqn_ps], ids=["replay", "pqn"])
def test_the_weight_anneals_over_the_horizon_and_is_logged(module):
    cfg = {**SMALL, "REW_SHAPING_HORIZON": HORIZON}
    if module is pqn_ps:
        cfg = {k: v for k, v in cfg.items() if k not in ("BUFFER_SIZE", "BUFFER_BATCH_SIZE", "LEARNING_STARTS",
                                                         "TARGET_UPDATE_INTERVAL")}
        cfg.update(NUM_MINIBATCHES=2, NUM_EPOCHS=1)
    out = jax.jit(module.make_train(cfg, ShapedEcho()))(jax.random.PRNGKey(0))
    m = {k: np.asarray(v) for k, v in out["metrics"].items()}
    before = m["env_step"] - 4 * 6                                        # env steps before each update
    np.testing.assert_allclose(m["rew_shaping_weight"], np.clip(1 - before / HORIZON, 0, 1), atol=1e-6)
    assert m["rew_shaping_weight"][0] == 1.0 and m["rew_shaping_weight"][-1] == 0.0
    # per env step, summed over the 3 agents: 2 + 3 + 4 + 3 t / 10 with t between 1 and max_steps
    assert ((m["shaped_rewards"] > 9.0) & (m["shaped_rewards"] <= 9.0 + 0.3 * EchoGame().max_steps)).all()
    off = jax.jit(module.make_train({**cfg, "REW_SHAPING_HORIZON": 0}, ShapedEcho()))(jax.random.PRNGKey(0))
    assert "rew_shaping_weight" not in off["metrics"] and "shaped_rewards" not in off["metrics"]


def test_an_env_without_a_shaped_reward_refuses_the_key():
    with pytest.raises(ConfigError, match=r"REW_SHAPING_HORIZON=100 needs an env that pays a shaped reward"):
        vdn_ps.make_train({**SMALL, "REW_SHAPING_HORIZON": 100}, EchoGame())
    with pytest.raises(ConfigError, match=r"REW_SHAPING_HORIZON must be >= 0"):
        vdn_ps.make_train({**SMALL, "REW_SHAPING_HORIZON": -1}, ShapedEcho())


@pytest.mark.parametrize("name", ["overcooked", "overcooked_v2"])
def test_overcooked_shaped_rewards_reach_the_loop_unchanged(name):
    """Random play on cramped_room (Overcooked and Overcooked v2): the wrapper's infos["shaped_reward"] equal the
    env's own, step by step, and some are paid (an onion put into a pot: 3)."""
    env = make_env({"ENV_NAME": name, "ENV_KWARGS": {"layout": "cramped_room"}})
    wrapped = CTRolloutManager(env, 64)
    n_act = env.action_space(env.agents[0]).n

    def step(carry, key):
        states = carry
        k_act, k_env = jax.random.split(key)
        actions = {a: jax.random.randint(jax.random.fold_in(k_act, i), (64,), 0, n_act)
                   for i, a in enumerate(env.agents)}
        keys = jax.random.split(k_env, 64)
        raw = jax.vmap(env.step)(keys, states, actions)[4]["shaped_reward"]
        _, new, _, _, infos = jax.vmap(wrapped.wrapped_step)(keys, states, actions)
        return new, (stack_agents(raw, env.agents), stack_agents(infos["shaped_reward"], env.agents))

    _, states = wrapped.batch_reset(jax.random.PRNGKey(0))
    _, (raw, got) = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.PRNGKey(1), 200)))(states)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(raw))
    assert (np.asarray(raw) > 0).any()
