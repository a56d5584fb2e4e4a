"""Overcooked (JaxMARL's `overcooked`, `overcooked_v2`): a layout is chosen by name (an unknown one lists the
available ones), the image observations reach convolutional agents (CNN_PADDING=SAME as JaxMARL's Overcooked
CNN), and the global state QMIX reads is the two agents' images joined, as floats. The shipped configs
({iql,vdn,qmix,pqn}_overcooked: JaxMARL's settings, reward shaping on) train at toy sizes; the shaping itself is
tested in tests/test_reward_shaping.py.
"""
import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from purejaxql.config import ConfigError
from purejaxql.environments import CTRolloutManager, make_env
from purejaxql.networks import AgentNetwork
from shipped import cli


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


# Through the CLI at XLA's default optimisation level: the suite's level 0 (tests/conftest.py) runs convolutions
# ~10x slower. The default run trains VDN (the replay loop with the CNN and shaping); the others are slow.
@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", ["vdn_ps", pytest.param("iql_ps", marks=pytest.mark.slow),
                                  pytest.param("qmix_ps", marks=pytest.mark.slow),
                                  pytest.param("pqn_ps", marks=pytest.mark.slow)])
def test_shipped_configs_train_on_cramped_room(name, tmp_path):
    tiny = ["alg.NUM_ENVS=4", "alg.NUM_STEPS=8", f"alg.TOTAL_TIMESTEPS={4 * 8 * 12}", "alg.TEST_NUM_ENVS=2",
            "alg.TEST_INTERVAL=0.5", f"alg.REW_SHAPING_HORIZON={4 * 8 * 6}"]
    if name == "pqn_ps":
        tiny += ["alg.NUM_MINIBATCHES=2", "alg.NUM_EPOCHS=1"]
    else:
        tiny += ["alg.LEARNING_STARTS=64", "alg.BUFFER_SIZE=64", "alg.BUFFER_BATCH_SIZE=8",
                 "alg.TARGET_UPDATE_INTERVAL=4"]
    alg = name.split("_")[0]
    r = cli(name, f"+alg={alg}_overcooked", *tiny, "PROGRESS=False", "hydra.run.dir=run", cwd=tmp_path,
            default_xla_level=True)
    assert r.returncode == 0, r.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["alg"]
    assert config["AGENT_TYPE"] == "cnn" and config["CNN_PADDING"] == "SAME" and config["NUM_LAYERS"] == 2
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    m = {k: np.array([float(row[k]) for row in rows]) for k in rows[0] if k != "seed_index"}
    assert m["grad_steps"][-1] > 0 and np.isfinite(m["loss"][m["grad_steps"] > 0]).all()
    assert np.isfinite(m["test_returned_episode_returns"][-1])   # the 400-step episodes end inside the evaluation
    assert m["rew_shaping_weight"][0] == 1.0 and m["rew_shaping_weight"][-1] == 0.0
    assert np.isfinite(m["shaped_rewards"]).all() and (m["shaped_rewards"] >= 0).all()
