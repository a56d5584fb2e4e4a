"""The dueling head (DUELING: Q = V + A - mean over actions of A, Wang et al. 2016; JaxMARL's Hanabi PQN) and
layer normalisation in the replay learners (NORM_TYPE=layer_norm), which the Hanabi configs use: the head's
formula on the network's own V and A, identifiability (the advantages' mean is zero), both loops train with it,
and bad values are named."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import TwoStepGame
from purejaxql import pqn_ps, vdn_ps
from purejaxql.config import ConfigError, resolve_config
from purejaxql.networks import AgentNetwork
from purejaxql.spec import SPECS


@pytest.mark.parametrize("recurrent", [False, True])
def test_dueling_head_is_value_plus_centred_advantages(recurrent):
    net = AgentNetwork(action_dim=5, hidden_dim=16, recurrent=recurrent, num_layers=2, norm_type="layer_norm",
                       dueling=True)
    T, B, D = 3, 4, 7
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    obs, h0, first = jax.random.normal(k[0], (T, B, D)), jnp.zeros((B, 16)), jnp.zeros((T, B), bool)
    params = net.init(k[1], h0, obs, first)
    # the heads get their own, not-zero weights: perturb them so V and A are far from 0
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(k[2], p.shape), params)
    (_, q), inter = net.apply(params, h0, obs, first, capture_intermediates=True, mutable=["intermediates"])
    adv = np.asarray(inter["intermediates"]["Dense_2"]["__call__"][0]).reshape(T, B, 5)
    val = np.asarray(inter["intermediates"]["Value"]["__call__"][0]).reshape(T, B, 1)
    assert "Value" in params["params"] and params["params"]["Value"]["kernel"].shape == (16, 1)
    np.testing.assert_allclose(np.asarray(q), val + adv - adv.mean(-1, keepdims=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(q).mean(-1), val[..., 0], rtol=1e-5, atol=1e-5)  # mean_a Q = V
    assert np.abs(adv.mean(-1)).max() > 1e-2   # (the raw advantages are not centred themselves)
    plain = AgentNetwork(action_dim=5, hidden_dim=16, recurrent=recurrent, num_layers=2, norm_type="layer_norm")
    assert "Value" not in plain.init(k[1], h0, obs, first)["params"]


@pytest.mark.parametrize("module,extra", [
    (vdn_ps, dict(BUFFER_SIZE=64, BUFFER_BATCH_SIZE=4, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=1,
                  NORM_TYPE="layer_norm", NUM_LAYERS=2)),
    (pqn_ps, dict(NUM_MINIBATCHES=2, NUM_EPOCHS=1)),
])
def test_both_loops_train_dueling_agents(module, extra):
    cfg = dict(NUM_ENVS=4, NUM_STEPS=2, TOTAL_TIMESTEPS=4 * 2 * 6, AGENT_TYPE="ff", AGENT_HIDDEN_DIM=8, DUELING=True,
               TEST_NUM_ENVS=2, **extra)
    out = jax.jit(module.make_train(cfg, TwoStepGame()))(jax.random.PRNGKey(0))
    params = out["runner_state"].train.params["agent"]["params"]
    assert "Value" in params
    if module is vdn_ps:
        assert "norm_0" in params and "norm_1" in params
    m = jax.tree.map(np.asarray, out["metrics"])
    learnt = m["grad_steps"] > 0
    assert learnt.any() and np.isfinite(m["loss"][learnt]).all() and m["loss"][learnt].any()


def test_bad_dueling_and_replay_norm_values_are_named():
    with pytest.raises(ConfigError, match="DUELING must be True or False, got 'yes'"):
        resolve_config({"DUELING": "yes"}, SPECS["pqn_ps"])
    with pytest.raises(ConfigError, match="NORM_TYPE must be 'none' or 'layer_norm' for replay learners, got 'batch_norm'"):
        vdn_ps.make_train({"NORM_TYPE": "batch_norm", "TOTAL_TIMESTEPS": 1e4, "LEARNING_STARTS": 0}, TwoStepGame())
