"""Peng's Q(λ) returns and the normalised agent networks PQN uses, against plain Python / numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql.networks import AgentNetwork, SeparateAgents, SharedAgents
from purejaxql.pretrained import network_of
from purejaxql.rl_math import lambda_returns


def py_q_lambda(rewards, dones, next_values, gamma, lam):
    """Plain loop, written from the definition: the λ-return mixes n-step returns; at an episode end
    nothing is bootstrapped; the step after the last one bootstraps on its next value."""
    T = len(rewards)
    out = [0.0] * T
    for t in range(T):
        # G_t^λ = (1-λ) Σ_{n>=1} λ^{n-1} G_t^(n), truncated at the end of the trajectory or episode
        total, weight_left = 0.0, 1.0
        n_step_return, discount = 0.0, 1.0
        for k in range(t, T):
            n_step_return += discount * rewards[k]
            if dones[k]:  # episode over: every longer n-step return equals this one
                total += weight_left * n_step_return
                weight_left = 0.0
                break
            discount *= gamma
            g_n = n_step_return + discount * next_values[k]
            if k == T - 1:  # no more data: the rest of the weight goes to the longest return
                total += weight_left * g_n
                weight_left = 0.0
            else:
                total += weight_left * (1 - lam) * g_n
                weight_left *= lam
        out[t] = total
    return np.array(out)


lam_fn = jax.jit(jax.vmap(lambda_returns, in_axes=(0, 0, 0, None)))


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
def test_lambda_returns_match_python_loop(lam):
    rng = np.random.default_rng(0)
    B, T, gamma = 16, 12, 0.9
    r = rng.normal(size=(B, T)).astype(np.float32)
    d = rng.random((B, T)) < 0.2
    d[0] = False                 # no episode end: bootstrap only at the end
    d[1] = False
    d[1, -1] = True               # episode ends on the last step: no bootstrap at all
    v = rng.normal(size=(B, T)).astype(np.float32)
    got = np.asarray(lam_fn(r, gamma * (1.0 - d), v, lam))
    want = np.stack([py_q_lambda(r[b], d[b], v[b], gamma, lam) for b in range(B)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_one_step_and_one_is_monte_carlo():
    r = jnp.array([1.0, 2.0, 3.0])
    v = jnp.array([10.0, 20.0, 30.0])
    disc = jnp.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(lambda_returns(r, disc, v, 0.0), r + disc * v)
    # λ = 1: discounted rewards to the end, bootstrapped only on the last next value
    np.testing.assert_allclose(lambda_returns(r, disc, v, 1.0),
                               [1 + .5 * 2 + .25 * 3 + .125 * 30, 2 + .5 * 3 + .25 * 30, 3 + .5 * 30])


def test_lambda_returns_shape_checked():
    with pytest.raises(AssertionError):
        lambda_returns(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3), 0.5)


# ---------------------------------------------------------------------------------------------------
# normalised networks
# ---------------------------------------------------------------------------------------------------
def test_layer_norm_network_matches_numpy():
    net = AgentNetwork(action_dim=4, hidden_dim=8, recurrent=False, num_layers=2, norm_type="layer_norm")
    obs = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 6))
    v = net.init(jax.random.PRNGKey(0), jnp.zeros((5, 8)), obs, jnp.zeros((3, 5), bool))
    p = jax.tree.map(np.asarray, v["params"])
    rng = np.random.default_rng(0)  # non-trivial LayerNorm scale/bias
    for k in ("norm_0", "norm_1"):
        p[k] = {"scale": rng.normal(size=8).astype(np.float32), "bias": rng.normal(size=8).astype(np.float32)}
    _, q = net.apply({"params": p}, jnp.zeros((5, 8)), obs, jnp.zeros((3, 5), bool))
    x = np.asarray(obs, np.float64)
    for i in range(2):
        x = x @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
        x = np.maximum(x * p[f"norm_{i}"]["scale"] + p[f"norm_{i}"]["bias"], 0)
    want = x @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(np.asarray(q), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", [SharedAgents, SeparateAgents])
def test_batch_norm_train_mode_uses_batch_stats_and_updates_running_ones(cls):
    net = AgentNetwork(action_dim=3, hidden_dim=8, recurrent=True, num_layers=1, norm_type="batch_norm",
                       norm_input=True)
    agents = cls(net, 2, 4)
    v = agents.init(jax.random.PRNGKey(0))
    obs = 5.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(1), (6, 10, 2, 4))
    first = jnp.zeros((6, 10), bool).at[0].set(True)
    h = agents.initial_hidden(10)
    _, q_eval = agents.apply(v, h, obs, first)
    _, q_train, v2 = agents.apply_train(v, h, obs, first)
    assert not np.allclose(q_eval, q_train)          # batch statistics, not the initial running ones
    mean0 = np.asarray(v["batch_stats"]["input_norm"]["mean"])
    mean1 = np.asarray(v2["batch_stats"]["input_norm"]["mean"])
    assert np.allclose(mean0, 0) and (mean1 > 0.01).all()  # running mean moved towards the data (~5)
    # running means (momentum 0.99) of the inputs each network saw
    if cls is SharedAgents:
        np.testing.assert_allclose(mean1, 0.01 * np.asarray(obs).reshape(-1, 4).mean(0), rtol=1e-4)
    else:
        for i in range(2):
            np.testing.assert_allclose(mean1[i], 0.01 * np.asarray(obs)[:, :, i].reshape(-1, 4).mean(0), rtol=1e-4)
    jax.tree.map(np.testing.assert_array_equal, v["params"], v2["params"])  # params untouched


@pytest.mark.parametrize("norm,norm_input,recurrent,layers", [
    ("layer_norm", False, False, 2), ("batch_norm", True, True, 1), ("none", False, True, 3)])
def test_network_of_rebuilds_architecture_from_shapes(norm, norm_input, recurrent, layers):
    net = AgentNetwork(action_dim=5, hidden_dim=12, recurrent=recurrent, num_layers=layers, norm_type=norm,
                       norm_input=norm_input)
    v = SharedAgents(net, 3, 7).init(jax.random.PRNGKey(0))
    rebuilt, with_id = network_of(jax.tree.map(np.asarray, v), "agent_0", 4, 3, 5)
    assert with_id and rebuilt == net


def test_layer_norm_equals_flax_values_and_autodiff_gradients():
    import flax.linen as nn
    from purejaxql.networks import layer_norm
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 16)) * 3 + 1
    scale = jax.random.normal(jax.random.PRNGKey(1), (16,))
    bias = jax.random.normal(jax.random.PRNGKey(2), (16,))
    want = nn.LayerNorm().apply({"params": {"scale": scale, "bias": bias}}, x)
    np.testing.assert_allclose(layer_norm(x, scale, bias), want, rtol=1e-5, atol=1e-5)

    def plain(x, s, b):  # the same function, differentiated by JAX
        c = x - x.mean(-1, keepdims=True)
        return c / jnp.sqrt((c * c).mean(-1, keepdims=True) + 1e-6) * s + b
    w = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    g_custom = jax.grad(lambda *a: jnp.sum(w * layer_norm(*a)), argnums=(0, 1, 2))(x, scale, bias)
    g_plain = jax.grad(lambda *a: jnp.sum(w * plain(*a)), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(g_custom, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra,message", [
    ({"LAMBDA": 1.5}, "LAMBDA must be in [0, 1]"),
    ({"NORM_TYPE": "group_norm"}, "NORM_TYPE must be one of"),
    ({"MIXER": "qmix"}, "MIXER must be 'vdn' or 'none'"),
    ({"AGENT_TYPE": "rnn", "MEMORY_WINDOW": 20}, "MEMORY_WINDOW must be in [0, NUM_STEPS=16]"),
    ({"AGENT_TYPE": "rnn", "NUM_MINIBATCHES": 3}, "NUM_MINIBATCHES (3) must divide NUM_ENVS"),
    ({"TARGET_UPDATE_INTERVAL": 10},
     "'TARGET_UPDATE_INTERVAL' is not used by pqn (it belongs to iql/vdn/qmix/qplex/owqmix/cwqmix/qatten)"),
])
def test_pqn_config_errors_name_the_culprit(extra, message):
    from purejaxql.config import ConfigError, resolve_config
    from purejaxql.spec import Spec
    with pytest.raises(ConfigError) as e:
        resolve_config({"NUM_ENVS": 8, "NUM_STEPS": 16, "TEST_NUM_STEPS": 26, "TOTAL_TIMESTEPS": 1e4, **extra},
                       Spec("pqn"))
    assert message in str(e.value)


def test_replay_config_rejects_pqn_keys():
    from purejaxql.config import ConfigError, resolve_config
    from purejaxql.spec import Spec
    with pytest.raises(ConfigError, match="'LAMBDA' is not used by vdn .it belongs to pqn"):
        resolve_config({"NUM_STEPS": 26, "TEST_NUM_STEPS": 26, "LAMBDA": 0.5}, Spec("vdn"))
