"""Unit tests of the pure value-learning math, the mixers and the agent networks.

Every JAX result is compared against an independent plain-Python / numpy computation written here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql import iql, qmix, vdn
from purejaxql.config import QMIX_DEFAULTS
from purejaxql.networks import AgentNetwork, SharedAgents
from purejaxql.decomposition import Team, td_loss
from purejaxql.rl_math import (double_q_bootstrap, double_q_td_error, epsilon_greedy,
                               linear_schedule, masked_argmax, masked_mean)


def loss_of(algorithm, online, target, q_taken, q_next, rewards, discount, states=None):
    """The replay loop's loss (decomposition.td_loss) with ``algorithm``'s mixer (no mask)."""
    T, Bs, N = np.shape(q_taken)
    states = np.zeros((T + 1, Bs, 0), np.float32) if states is None else states
    mixer = algorithm.make_mixer(dict(QMIX_DEFAULTS), Team(N, states.shape[-1], 0, 0))
    return td_loss(algorithm.team_reward, mixer.apply, online, target, q_taken, q_next, rewards, discount, states)


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def random_avail(rng: np.random.Generator, batch: int, num_actions: int) -> np.ndarray:
    """(B, A) 0/1 float masks, each row with at least one available action."""
    avail = (rng.random((batch, num_actions)) < 0.5).astype(np.float32)
    for b in range(batch):
        if avail[b].sum() == 0:
            avail[b, rng.integers(num_actions)] = 1.0
    return avail


def py_masked_argmax(q_row, avail_row) -> int:
    best, best_q = None, None
    for a in range(len(q_row)):
        if avail_row[a] > 0 and (best is None or q_row[a] > best_q):
            best, best_q = a, q_row[a]
    return best


# ---------------------------------------------------------------------------------------------------
# jitted functions, compiled once per module
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def td_fn():
    return jax.jit(jax.vmap(double_q_td_error))


@pytest.fixture(scope="module")
def bootstrap_fn():
    return jax.jit(jax.vmap(double_q_bootstrap))


@pytest.fixture(scope="module")
def eps_greedy_fn():
    # keys, q, avail batched; epsilon shared
    return jax.jit(jax.vmap(epsilon_greedy, in_axes=(0, 0, 0, None)))


@pytest.fixture(scope="module")
def double_q_data():
    rng = np.random.default_rng(0)
    B, A, gamma = 64, 6, 0.9
    q_tm1 = rng.normal(size=(B, A)).astype(np.float32)
    a_tm1 = rng.integers(0, A, size=B).astype(np.int32)
    r_t = rng.normal(size=B).astype(np.float32)
    dones = rng.random(B) < 0.3
    assert dones.any() and (~dones).any()
    discount_t = (gamma * (1.0 - dones)).astype(np.float32)
    q_t_value = rng.normal(size=(B, A)).astype(np.float32)
    q_t_selector = rng.normal(size=(B, A)).astype(np.float32)
    avail_t = random_avail(rng, B, A)
    return dict(q_tm1=q_tm1, a_tm1=a_tm1, r_t=r_t, discount_t=discount_t, q_t_value=q_t_value,
                q_t_selector=q_t_selector, avail_t=avail_t, dones=dones)


# ---------------------------------------------------------------------------------------------------
# 1. double Q-learning
# ---------------------------------------------------------------------------------------------------
def test_double_q_td_error_matches_python_loop(td_fn, double_q_data):
    d = double_q_data
    got = np.asarray(td_fn(d["q_tm1"], d["a_tm1"], d["r_t"], d["discount_t"], d["q_t_value"],
                           d["q_t_selector"], d["avail_t"]))
    B = d["q_tm1"].shape[0]
    expected = np.zeros(B)
    for b in range(B):
        a_star = py_masked_argmax(d["q_t_selector"][b], d["avail_t"][b])
        target = d["r_t"][b] + d["discount_t"][b] * d["q_t_value"][b][a_star]
        expected[b] = target - d["q_tm1"][b][d["a_tm1"][b]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # where the episode ended the target is the reward alone
    done = d["dones"]
    np.testing.assert_allclose(
        got[done], d["r_t"][done] - d["q_tm1"][done, d["a_tm1"][done]], rtol=1e-5, atol=1e-5)


def test_double_q_bootstrap_matches_python_loop(bootstrap_fn, double_q_data):
    d = double_q_data
    got = np.asarray(bootstrap_fn(d["q_t_value"], d["q_t_selector"], d["avail_t"]))
    B = d["q_t_value"].shape[0]
    expected = np.array([d["q_t_value"][b][py_masked_argmax(d["q_t_selector"][b], d["avail_t"][b])]
                         for b in range(B)])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # it really is *double* Q: the value net's own masked max gives a different answer somewhere
    single_q = np.array([d["q_t_value"][b][py_masked_argmax(d["q_t_value"][b], d["avail_t"][b])]
                         for b in range(B)])
    assert not np.allclose(got, single_q)


def test_bootstrap_never_picks_unavailable_action(bootstrap_fn):
    rng = np.random.default_rng(1)
    B, A = 64, 6
    avail = random_avail(rng, B, A)
    # guarantee that some rows have unavailable actions
    avail[:, 0] = 0.0
    avail[:, 1] = 1.0
    selector = rng.normal(size=(B, A)).astype(np.float32)
    selector = np.where(avail > 0, selector, 100.0 + rng.random((B, A))).astype(np.float32)
    # value = action index, so the bootstrap reveals which action was picked
    value = np.tile(np.arange(A, dtype=np.float32), (B, 1))
    picked = np.asarray(bootstrap_fn(value, selector, avail)).astype(int)
    for b in range(B):
        assert avail[b, picked[b]] == 1.0, (b, picked[b], avail[b])
        assert picked[b] == py_masked_argmax(selector[b], avail[b])
    # and the unmasked argmax would have picked an unavailable action in every row
    assert np.all(avail[np.arange(B), selector.argmax(-1)] == 0.0)


def test_masked_argmax_with_bool_and_single_available():
    q = jnp.array([5.0, -1.0, 3.0, 10.0])
    assert int(masked_argmax(q, jnp.array([0, 1, 0, 0]))) == 1
    assert int(masked_argmax(q, jnp.array([True, False, True, False]))) == 0
    # all-negative Q values among available actions still beat unavailable ones
    q = jnp.array([-5.0, -7.0, 0.0])
    assert int(masked_argmax(q, jnp.array([1.0, 1.0, 0.0]))) == 0


def test_td_error_does_not_differentiate_through_target():
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    q_t = jnp.array([0.5, -1.0, 4.0])
    avail = jnp.ones(3)

    def f(q_tm1, q_t_value, q_t_selector):
        return double_q_td_error(q_tm1, jnp.int32(2), jnp.float32(1.0), jnp.float32(0.9),
                                 q_t_value, q_t_selector, avail)

    g_tm1, g_val, g_sel = jax.grad(f, argnums=(0, 1, 2))(q_tm1, q_t, q_t)
    np.testing.assert_array_equal(np.asarray(g_tm1), [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(np.asarray(g_val), np.zeros(3))
    np.testing.assert_array_equal(np.asarray(g_sel), np.zeros(3))
    assert float(f(q_tm1, q_t, q_t)) == pytest.approx(1.0 + 0.9 * 4.0 - 3.0)


# ---------------------------------------------------------------------------------------------------
# 2. epsilon-greedy
# ---------------------------------------------------------------------------------------------------
EPS_K = 3000
EPS_AVAIL = np.array([1.0, 0.0, 1.0, 1.0, 0.0], np.float32)
# the unavailable actions have the largest Q values
EPS_Q = np.array([0.3, 9.0, -1.0, 0.7, 8.0], np.float32)


def test_epsilon_one_is_uniform_over_available(eps_greedy_fn):
    keys = jax.random.split(jax.random.PRNGKey(0), EPS_K)
    q = np.tile(EPS_Q, (EPS_K, 1))
    avail = np.tile(EPS_AVAIL, (EPS_K, 1))
    actions = np.asarray(eps_greedy_fn(keys, q, avail, jnp.float32(1.0)))
    assert actions.dtype == np.int32
    assert actions.shape == (EPS_K,)
    assert np.all(EPS_AVAIL[actions] == 1.0)
    counts = np.bincount(actions, minlength=5)
    available = np.flatnonzero(EPS_AVAIL)
    assert set(np.flatnonzero(counts)) == set(available)
    freq = counts[available] / EPS_K
    np.testing.assert_allclose(freq, np.full(len(available), 1.0 / len(available)), atol=0.05)


def test_epsilon_zero_is_masked_argmax(eps_greedy_fn):
    rng = np.random.default_rng(2)
    K, A = EPS_K, 5
    keys = jax.random.split(jax.random.PRNGKey(1), K)
    q = rng.normal(size=(K, A)).astype(np.float32)
    avail = random_avail(rng, K, A)
    q = np.where(avail > 0, q, 50.0).astype(np.float32)  # unavailable actions look best
    actions = np.asarray(eps_greedy_fn(keys, q, avail, jnp.float32(0.0)))
    expected = np.array([py_masked_argmax(q[k], avail[k]) for k in range(K)])
    np.testing.assert_array_equal(actions, expected)


def test_epsilon_half_mixes_greedy_and_random(eps_greedy_fn):
    keys = jax.random.split(jax.random.PRNGKey(2), EPS_K)
    q = np.tile(EPS_Q, (EPS_K, 1))
    avail = np.tile(EPS_AVAIL, (EPS_K, 1))
    actions = np.asarray(eps_greedy_fn(keys, q, avail, jnp.float32(0.5)))
    assert np.all(EPS_AVAIL[actions] == 1.0)
    greedy = py_masked_argmax(EPS_Q, EPS_AVAIL)
    assert greedy == 3
    # P(greedy) = (1 - eps) + eps / n_available = 0.5 + 0.5 / 3
    assert np.mean(actions == greedy) == pytest.approx(0.5 + 0.5 / 3, abs=0.05)


# ---------------------------------------------------------------------------------------------------
# 3. linear schedule
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t, expected", [
    (0.0, 1.0), (25.0, 1.0 - 0.25 * 0.95), (50.0, 0.525), (100.0, 0.05), (250.0, 0.05), (1e9, 0.05),
])
def test_linear_schedule_decreasing(t, expected):
    assert float(linear_schedule(1.0, 0.05, 100.0, jnp.float32(t))) == pytest.approx(expected, abs=1e-6)


def test_linear_schedule_increasing_and_integer_time():
    vals = [float(linear_schedule(0.0, 2.0, 10, jnp.int32(t))) for t in (0, 5, 10, 11)]
    np.testing.assert_allclose(vals, [0.0, 1.0, 2.0, 2.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# 4. VDN
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loss_data():
    rng = np.random.default_rng(3)
    T, Bs, N = 5, 4, 3
    return dict(
        q_taken=rng.normal(size=(T, Bs, N)).astype(np.float32),
        q_next=rng.normal(size=(T, Bs, N)).astype(np.float32),
        rewards=rng.normal(size=(T, Bs, N)).astype(np.float32),
        discount=(0.99 * (rng.random((T, Bs)) > 0.3)).astype(np.float32),
        T=T, Bs=Bs, N=N)


def test_vdn_mix_is_sum():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(3, 4, 5)).astype(np.float32)
    got = np.asarray(vdn.vdn_mix({}, jnp.asarray(q), jnp.zeros((3, 4, 0))))
    expected = np.zeros((3, 4))
    for i in range(3):
        for j in range(4):
            expected[i, j] = sum(float(v) for v in q[i, j])
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_vdn_loss_matches_numpy(loss_data):
    d = loss_data
    got = float(loss_of(vdn.VDN, {}, {}, d["q_taken"], d["q_next"], d["rewards"], d["discount"]))
    sq = []
    for t in range(d["T"]):
        for b in range(d["Bs"]):
            y = sum(d["rewards"][t, b]) + d["discount"][t, b] * sum(d["q_next"][t, b])
            sq.append((y - sum(d["q_taken"][t, b])) ** 2)
    assert got == pytest.approx(float(np.mean(sq)), rel=1e-5)


def test_vdn_loss_gradient_only_through_q_taken(loss_data):
    d = loss_data
    g_taken, g_next = jax.grad(
        lambda qt, qn: loss_of(vdn.VDN, {}, {}, qt, qn, d["rewards"], d["discount"]),
        argnums=(0, 1))(jnp.asarray(d["q_taken"]), jnp.asarray(d["q_next"]))
    np.testing.assert_array_equal(np.asarray(g_next), 0.0)
    # dL/dq_taken[t,b,i] = -2 (y - Q_tot) / (T*Bs), identical for every agent i
    y = d["rewards"].sum(-1) + d["discount"] * d["q_next"].sum(-1)
    expected = -2.0 * (y - d["q_taken"].sum(-1)) / (d["T"] * d["Bs"])
    np.testing.assert_allclose(np.asarray(g_taken),
                               np.repeat(expected[..., None], d["N"], -1), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# 5. QMIX / IQL
# ---------------------------------------------------------------------------------------------------
QMIX_N, QMIX_S = 4, 10


def np_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def np_dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_hypernet(p, s):
    return np_dense(p["Dense_1"], np.maximum(np_dense(p["Dense_0"], s), 0.0))


def np_qmixer(params, q, s, N, E):
    """Documented QMIX equations on a single (q (N,), s (S,)) point, in float64."""
    p = params["params"]
    q = np.asarray(q, np.float64)
    s = np.asarray(s, np.float64)
    w1 = np.abs(np_hypernet(p["HyperNetwork_0"], s)).reshape(N, E)
    b1 = np_dense(p["Dense_0"], s)
    w2 = np.abs(np_hypernet(p["HyperNetwork_1"], s))
    v = np_hypernet(p["HyperNetwork_2"], s)[0]
    h = np_elu(q @ w1 + b1)
    return float(h @ w2 + v)


@pytest.fixture(scope="module")
def qmix_setup():
    cfg = dict(QMIX_DEFAULTS)
    mixer = qmix.make_mixer(cfg, Team(QMIX_N, QMIX_S, 0, 0))
    params = mixer.init(jax.random.PRNGKey(0))
    # large random perturbation of every parameter (numpy noise: no extra compiles)
    noise_rng = np.random.default_rng(11)
    params = jax.tree_util.tree_map(np.asarray, params)
    noisy = jax.tree_util.tree_map(
        lambda x: (x + 2.0 * noise_rng.normal(size=x.shape)).astype(np.float32), params)
    jac_fn = jax.jit(jax.vmap(jax.jacobian(lambda p, q, s: mixer.apply(p, q, s), argnums=1),
                              in_axes=(None, 0, 0)))
    return dict(cfg=cfg, mixer=mixer, params=params, noisy=noisy, jac_fn=jac_fn)


@pytest.mark.parametrize("which", ["params", "noisy"])
def test_qmix_monotonic_in_agent_qs(qmix_setup, which):
    rng = np.random.default_rng(5)
    P = 512
    q = (5.0 * rng.normal(size=(P, QMIX_N))).astype(np.float32)
    s = (3.0 * rng.normal(size=(P, QMIX_S))).astype(np.float32)
    jac = np.asarray(qmix_setup["jac_fn"](qmix_setup[which], q, s))
    assert jac.shape == (P, QMIX_N)
    assert np.all(np.isfinite(jac))
    assert np.all(jac >= 0.0), jac.min()
    assert np.mean(jac > 0.0) > 0.5  # non-trivial: the mixer really depends on the agent Qs


def test_qmix_finite_difference_monotonic(qmix_setup):
    """Raising one agent's Q never lowers Q_tot (checked without autodiff)."""
    rng = np.random.default_rng(6)
    mixer, params = qmix_setup["mixer"], qmix_setup["noisy"]
    P = 64
    q = (3.0 * rng.normal(size=(P, QMIX_N))).astype(np.float32)
    s = rng.normal(size=(P, QMIX_S)).astype(np.float32)
    for i in range(QMIX_N):
        bumped = q.copy()
        bumped[:, i] += 1.0
        lo = np.asarray(mixer.apply(params, q, s), np.float64)
        hi = np.asarray(mixer.apply(params, bumped, s), np.float64)
        assert np.all(hi >= lo - 1e-4)


def test_qmix_mixer_matches_numpy_equations(qmix_setup):
    rng = np.random.default_rng(7)
    mixer, params = qmix_setup["mixer"], qmix_setup["noisy"]
    E = qmix_setup["cfg"]["MIXER_EMBEDDING_DIM"]
    T, Bs = 3, 2
    q = rng.normal(size=(T, Bs, QMIX_N)).astype(np.float32)
    s = rng.normal(size=(T, Bs, QMIX_S)).astype(np.float32)
    got = np.asarray(mixer.apply(params, q, s))
    assert got.shape == (T, Bs)
    expected = np.array([[np_qmixer(params, q[t, b], s[t, b], QMIX_N, E) for b in range(Bs)]
                         for t in range(T)])
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_qmix_loss_matches_numpy(qmix_setup, loss_data):
    d = loss_data
    cfg, params, noisy = qmix_setup["cfg"], qmix_setup["params"], qmix_setup["noisy"]
    E = cfg["MIXER_EMBEDDING_DIM"]
    rng = np.random.default_rng(8)
    states = rng.normal(size=(d["T"] + 1, d["Bs"], QMIX_S)).astype(np.float32)
    q_taken = np.concatenate([d["q_taken"], d["q_taken"][..., :1]], -1)  # N = 4 agents
    q_next = np.concatenate([d["q_next"], d["q_next"][..., :1]], -1)
    rewards = np.concatenate([d["rewards"], d["rewards"][..., :1]], -1)
    # online mixer = noisy params, target mixer = initial params (must not be swapped)
    got = float(loss_of(qmix.QMIX, noisy, params, q_taken, q_next, rewards, d["discount"], states))
    sq = []
    for t in range(d["T"]):
        for b in range(d["Bs"]):
            y = rewards[t, b].sum() + d["discount"][t, b] * np_qmixer(params, q_next[t, b],
                                                                      states[t + 1, b], QMIX_N, E)
            sq.append((y - np_qmixer(noisy, q_taken[t, b], states[t, b], QMIX_N, E)) ** 2)
    assert got == pytest.approx(float(np.mean(sq)), rel=1e-3)


def test_iql_loss_matches_numpy(loss_data):
    d = loss_data
    got = float(loss_of(iql.IQL, {}, {}, d["q_taken"], d["q_next"], d["rewards"], d["discount"]))
    sq = []
    for t in range(d["T"]):
        for b in range(d["Bs"]):
            for i in range(d["N"]):
                y = d["rewards"][t, b, i] + d["discount"][t, b] * d["q_next"][t, b, i]
                sq.append((y - d["q_taken"][t, b, i]) ** 2)
    assert got == pytest.approx(float(np.mean(sq)), rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# 6. agent networks
# ---------------------------------------------------------------------------------------------------
NET_A, NET_H, NET_D = 4, 8, 6


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gru_gates(g):
    """GRU parameters -> per-gate (W_x, b_x, U_h, c_h) for gates r, z, n, in float64.

    Accepts the separate-gates layout (w_ir, w_iz, w_in, b_i*, w_hr, w_hz, w_hn, b_hn) and the fused
    layout (w_in (E, 3H), b_in, w_h (H, 3H), b_h), gate order r, z, n."""
    g = {k: np.asarray(v, np.float64) for k, v in g.items()}
    if "w_hr" in g:
        H = g["w_hr"].shape[0]
        zero = np.zeros(H)
        return {k: (g[f"w_i{k}"], g[f"b_i{k}"], g[f"w_h{k}"], g.get(f"b_h{k}", zero)) for k in "rzn"}
    if "w_h" in g:
        H = g["w_h"].shape[0]
        return {k: (g["w_in"][:, i * H:(i + 1) * H], g["b_in"][i * H:(i + 1) * H],
                    g["w_h"][:, i * H:(i + 1) * H], g["b_h"][i * H:(i + 1) * H])
                for i, k in enumerate("rzn")}
    raise KeyError(f"unknown GRU parameter layout: {sorted(g)}")


def np_agent_network(params, h0, obs, first, recurrent=True):
    """Documented AgentNetwork forward pass in numpy: obs (T, B, D), first (T, B), h0 (B, H).

    GRU (Cho et al. 2014), h reset to 0 before step t wherever first[t]:
    r = σ(x W_r + b_r + h U_r + c_r), z = σ(x W_z + b_z + h U_z + c_z),
    n = tanh(x W_n + b_n + r ⊙ (h U_n + c_n)), h' = (1 - z) ⊙ n + z ⊙ h."""
    p = params["params"]
    x = np.maximum(np_dense(p["Dense_0"], np.asarray(obs, np.float64)), 0.0)  # (T, B, H)
    if recurrent:
        gates = np_gru_gates(p["GRU_0"])
        H = gates["r"][2].shape[0]
        T, B = first.shape
        h = np.array(h0, np.float64)
        hs = np.zeros((T, B, H))

        def pre(k, xv, hv):
            W, bx, U, ch = gates[k]
            return xv @ W + bx, hv @ U + ch

        for t in range(T):
            for b in range(B):
                hb = np.zeros(H) if first[t, b] else h[b]
                xr, hr = pre("r", x[t, b], hb)
                xz, hz = pre("z", x[t, b], hb)
                xn, hn = pre("n", x[t, b], hb)
                r = np_sigmoid(xr + hr)
                z = np_sigmoid(xz + hz)
                n = np.tanh(xn + r * hn)
                h[b] = (1.0 - z) * n + z * hb
                hs[t, b] = h[b]
        x = hs
    else:
        h = np.asarray(h0, np.float64)
    return h, np_dense(p["Dense_1"], x)


@pytest.fixture(scope="module")
def rnn_setup():
    net = AgentNetwork(action_dim=NET_A, hidden_dim=NET_H, recurrent=True)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, NET_H)), jnp.zeros((1, 1, NET_D)),
                      jnp.zeros((1, 1), bool))
    rng = np.random.default_rng(9)
    T, B = 10, 3
    obs = rng.normal(size=(T, B, NET_D)).astype(np.float32)
    h0 = rng.normal(size=(B, NET_H)).astype(np.float32)  # a non-zero carried hidden state
    first = np.zeros((T, B), bool)
    first[5, 0] = True   # env 0: new episode at t = 5
    first[2, 1] = True   # env 1: new episode at t = 2 ...
    first[7, 1] = True   # ... and again at t = 7
    # env 2: no episode start in the window
    apply = jax.jit(net.apply)
    h_T, q = apply(params, h0, obs, first)
    return dict(net=net, params=params, apply=apply, obs=obs, h0=h0, first=first,
                q=np.asarray(q), h_T=np.asarray(h_T), T=T, B=B)


def test_rnn_matches_numpy_gru(rnn_setup):
    s = rnn_setup
    h_ref, q_ref = np_agent_network(s["params"], s["h0"], s["obs"], s["first"])
    assert s["q"].shape == (s["T"], s["B"], NET_A)
    np.testing.assert_allclose(s["q"], q_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s["h_T"], h_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("b, t", [(0, 5), (1, 2), (1, 7)])
def test_rnn_resets_exactly_at_episode_start(rnn_setup, b, t):
    s = rnn_setup
    T = s["T"]
    # a fresh unroll of env b starting at t, from a zero hidden state
    first_fresh = s["first"][t:, b:b + 1].copy()
    first_fresh[0] = False  # no reset flag needed: the hidden state is already zero
    _, q_fresh = s["net"].apply(s["params"], jnp.zeros((1, NET_H)), s["obs"][t:, b:b + 1],
                                first_fresh)
    q_fresh = np.asarray(q_fresh)[:, 0]
    np.testing.assert_allclose(s["q"][t:, b], q_fresh, rtol=1e-5, atol=1e-5)
    assert q_fresh.shape[0] == T - t

    # not one step early: at t-1 the carried hidden state is still in use, so the output differs from
    # a fresh start at t-1
    _, q_fresh_early = s["net"].apply(s["params"], jnp.zeros((1, NET_H)), s["obs"][t - 1:t, b:b + 1],
                                      np.zeros((1, 1), bool))
    assert np.max(np.abs(s["q"][t - 1, b] - np.asarray(q_fresh_early)[0, 0])) > 1e-3


def test_rnn_no_reset_without_first(rnn_setup):
    """Env 2 has no episode start: its first step uses the carried (non-zero) hidden state, and
    resetting at t=0 would change it."""
    s = rnn_setup
    first_reset = s["first"].copy()
    first_reset[0, 2] = True
    _, q_reset = s["apply"](s["params"], s["h0"], s["obs"], first_reset)
    q_reset = np.asarray(q_reset)
    assert np.max(np.abs(q_reset[0, 2] - s["q"][0, 2])) > 1e-3
    # the other envs are unaffected by env 2's flag
    np.testing.assert_allclose(q_reset[:, :2], s["q"][:, :2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("recurrent", [True, False])
def test_shared_agents_equals_per_agent_application(recurrent):
    N, T, B = 3, 4, 2
    net = AgentNetwork(action_dim=NET_A, hidden_dim=NET_H, recurrent=recurrent)
    agents = SharedAgents(net, N, NET_D)
    params = agents.init(jax.random.PRNGKey(3))
    rng = np.random.default_rng(10)
    H = agents.hidden_dim
    assert H == (NET_H if recurrent else 0)
    assert agents.initial_hidden(B).shape == (B, N, H)
    hidden = rng.normal(size=(B, N, H)).astype(np.float32)
    obs = rng.normal(size=(T, B, N, NET_D)).astype(np.float32)
    first = np.zeros((T, B), bool)
    first[2, 1] = True
    h_out, q = agents.apply(params, hidden, obs, first)
    h_out, q = np.asarray(h_out), np.asarray(q)
    assert q.shape == (T, B, N, NET_A)
    assert h_out.shape == (B, N, H)
    for i in range(N):
        h_i = hidden[:, i] if recurrent else np.zeros((B, NET_H), np.float32)
        h_ref, q_ref = np_agent_network(params, h_i, obs[:, :, i], first, recurrent)
        np.testing.assert_allclose(q[:, :, i], q_ref, rtol=1e-4, atol=1e-5)
        if recurrent:
            np.testing.assert_allclose(h_out[:, i], h_ref, rtol=1e-4, atol=1e-5)
        # the flax network applied to agent i alone agrees too
        h_net, q_net = net.apply(params, jnp.asarray(h_i), obs[:, :, i], first)
        np.testing.assert_allclose(q[:, :, i], np.asarray(q_net), rtol=1e-5, atol=1e-5)
    if not recurrent:
        np.testing.assert_array_equal(h_out, hidden)


def test_masked_mean_against_a_plain_loop():
    """The mask covers x's leading axes and weights every trailing entry; all-zero mask -> 0."""
    rs = np.random.RandomState(0)
    x = rs.randn(5, 4, 3).astype(np.float32)
    mask = (rs.rand(5, 4) > 0.4).astype(np.float32)
    picked = [x[t, b, i] for t in range(5) for b in range(4) for i in range(3) if mask[t, b]]
    assert 0 < len(picked) < x.size
    np.testing.assert_allclose(float(masked_mean(jnp.asarray(x), jnp.asarray(mask))), np.mean(picked), rtol=1e-6)
    np.testing.assert_allclose(float(masked_mean(jnp.asarray(x))), x.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(masked_mean(jnp.asarray(x[..., 0]), jnp.asarray(mask))),
                               np.mean([v for v, m in zip(x[..., 0].ravel(), mask.ravel()) if m]), rtol=1e-6)
    assert float(masked_mean(jnp.asarray(x), jnp.zeros((5, 4)))) == 0.0
