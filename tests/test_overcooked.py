"""Overcooked (JaxMARL's `overcooked`, `overcooked_v2`): a layout is chosen by name (an unknown one lists the
available ones), the image observations reach convolutional agents (CNN_PADDING=SAME as JaxMARL's Overcooked
CNN), and the global state QMIX reads is the two agents' images joined, as floats. Reward shaping and the
shipped Overcooked configs are not here yet.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql import pqn_ps, qmix_ps, vdn_ps
from purejaxql.config import ConfigError
from purejaxql.environments import CTRolloutManager, make_env
from purejaxql.networks import AgentNetwork

CNN = {"AGENT_TYPE": "cnn", "CNN_CHANNELS": [32, 32, 32], "CNN_KERNEL_SIZES": [5, 3, 3], "CNN_PADDING": "SAME"}


def test_layouts_by_name_and_the_global_state():
    env = make_env({"ENV_NAME": "overcooked", "ENV_KWARGS": {"layout": "cramped_room"}})
    assert env.observation_space("agent_0").shape == (5, 4, 26)
    wrapped = CTRolloutManager(env, 2)
    obs, _ = wrapped.batch_reset(jax.random.PRNGKey(0))
    assert obs["__all__"].dtype == jnp.float32 and obs["__all__"].shape == (2, 2 * 4 * 5 * 26)
    np.testing.assert_array_equal(np.asarray(obs["__all__"][:, :520]), np.asarray(obs["agent_0"][:, :520]))
    with pytest.raises(ConfigError, match=r"unknown overcooked layout 'cramped'.*available: \['asymm_advantages'"):
        make_env({"ENV_NAME": "overcooked", "ENV_KWARGS": {"layout": "cramped"}})
    with pytest.raises(ConfigError, match=r"unknown overcooked_v2 layout 'nope'"):
        make_env({"ENV_NAME": "overcooked_v2", "ENV_KWARGS": {"layout": "nope"}})


def test_same_padding_keeps_the_image_size():
    net = AgentNetwork(action_dim=6, hidden_dim=8, recurrent=False, image_shape=(5, 4, 26), cnn_channels=(32, 32),
                       cnn_kernel_sizes=(5, 3), cnn_padding="SAME")
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)), jnp.zeros((1, 1, 520)), jnp.zeros((1, 1), bool))
    assert params["params"]["Dense_0"]["kernel"].shape == (5 * 4 * 32, 8)   # 5 x 4 kept by every convolution


@pytest.mark.slow
@pytest.mark.parametrize("module", [vdn_ps, qmix_ps, pqn_ps])
def test_cnn_agents_train_on_cramped_room(module):
    cfg = {"ENV_NAME": "overcooked", "ENV_KWARGS": {"layout": "cramped_room"}, **CNN, "NUM_ENVS": 4, "NUM_STEPS": 8,
           "TOTAL_TIMESTEPS": 4 * 8 * 12, "TEST_NUM_ENVS": 2, "TEST_NUM_STEPS": 401}
    if module is pqn_ps:
        cfg.update(NUM_MINIBATCHES=2, NUM_EPOCHS=1)
    else:
        cfg.update(LEARNING_STARTS=64, BUFFER_SIZE=64, TARGET_UPDATE_INTERVAL=4)
    env = make_env(cfg)
    out = jax.jit(module.make_train(cfg, env))(jax.random.PRNGKey(0))
    m = {k: np.asarray(v) for k, v in out["metrics"].items()}
    assert m["grad_steps"][-1] > 0 and np.isfinite(m["loss"][m["grad_steps"] > 0]).all()
    assert np.isfinite(m["test_returned_episode_returns"][-1])   # the 400-step episodes end inside the evaluation
