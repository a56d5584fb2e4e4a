"""Agent variants: per-agent parameters (``_ns``) against shared ones (``_ps``), without training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql.networks import AgentNetwork, SeparateAgents, SharedAgents
from purejaxql.evaluation import per_agent_metrics, teams_of

N, T, B, D, A, H = 3, 5, 4, 7, 6, 16


def inputs(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    hidden = jax.random.normal(k1, (B, N, H))
    obs = jax.random.normal(k2, (T, B, N, D))
    first = jax.random.bernoulli(k3, 0.3, (T, B))
    return hidden, obs, first


def n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("recurrent", [True, False])
def test_separate_with_identical_params_equals_shared(recurrent):
    net = AgentNetwork(action_dim=A, hidden_dim=H, recurrent=recurrent)
    shared, separate = SharedAgents(net, N, D), SeparateAgents(net, N, D)
    p = shared.init(jax.random.PRNGKey(1))
    p_stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (N,) + x.shape), p)
    hidden, obs, first = inputs()
    h_s, q_s = shared.apply(p, hidden, obs, first)
    h_n, q_n = separate.apply(p_stacked, hidden, obs, first)
    assert q_n.shape == q_s.shape == (T, B, N, A)
    assert h_n.shape == h_s.shape == (B, N, H)
    np.testing.assert_allclose(np.asarray(q_n), np.asarray(q_s), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h_n), np.asarray(h_s), rtol=1e-5, atol=1e-5)


def test_separate_agents_use_their_own_slice():
    """Agent i's Q-values are those of the i-th parameter slice applied alone: each agent has its own
    network, initialised from its own key (so the slices differ)."""
    net = AgentNetwork(action_dim=A, hidden_dim=H)
    separate = SeparateAgents(net, N, D)
    params = separate.init(jax.random.PRNGKey(2))
    shared = SharedAgents(net, N, D)
    # N times the parameters of one network, nothing more
    assert n_params(params) == N * n_params(shared.init(jax.random.PRNGKey(0)))
    kernels = np.asarray(params["params"]["Dense_0"]["kernel"])
    assert kernels.shape == (N, D, H)
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    hidden, obs, first = inputs(3)
    _, q = separate.apply(params, hidden, obs, first)
    for i in range(N):
        p_i = jax.tree.map(lambda x: x[i], params)
        _, q_i = net.apply(p_i, hidden[:, i], obs[:, :, i], first)
        np.testing.assert_allclose(np.asarray(q[:, :, i]), np.asarray(q_i), rtol=1e-5, atol=1e-5)


def test_teams_and_per_agent_metrics():
    agents = ["adversary_0", "adversary_1", "adversary_2", "agent_0"]
    assert teams_of(agents) == {"adversary": [0, 1, 2], "agent": [3]}
    m = per_agent_metrics("r", jnp.array([1.0, 2.0, 3.0, -4.0]), agents)
    assert set(m) == {"r_adversary_0", "r_adversary_1", "r_adversary_2", "r_agent_0", "r_team_adversary"}
    assert float(m["r_team_adversary"]) == 6.0 and float(m["r_agent_0"]) == -4.0
    # a single team: no team metric (it would be the team return already logged)
    assert set(per_agent_metrics("r", jnp.zeros(2), ["agent_0", "agent_1"])) == {"r_agent_0", "r_agent_1"}
    assert teams_of(["leadadversary_0", "adversary_0", "agent_0"]) == {
        "leadadversary": [0], "adversary": [1], "agent": [2]}
