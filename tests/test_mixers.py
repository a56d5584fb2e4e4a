"""The value factorisations beside QMIX: QPLEX, OW-/CW-QMIX (weighted QMIX) and Qatten.

Mixers and losses are checked against plain numpy written from their modules' docstrings (as
tests/test_math.py does for QMIX), with parameters perturbed far from their initial values; QPLEX's IGM
property by enumerating every joint action. Then learning: the weighted-QMIX paper's matrix game (only the
weighted variants find the optimum under uniform exploration) and the QMIX paper's two-step game, then bad
input and tiny runs of the 12 new entry modules on their shipped configs.
"""
import importlib
import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import MatrixGame, TwoStepGame, TwoStepState
from purejaxql import qatten, qplex, wqmix
from purejaxql.config import QATTEN_DEFAULTS, QPLEX_DEFAULTS, WQMIX_DEFAULTS, ConfigError
from purejaxql.decomposition import AgentContext, Team, Transitions
from shipped import shipped
from test_two_step import CONFIG as TWO_STEP_CONFIG, SEEDS as TWO_STEP_SEEDS, fixed_point

NEW_ALGS = ("qplex", "owqmix", "cwqmix", "qatten")


# ---------------------------------------------------------------------------------------------------
# numpy helpers (float64)
# ---------------------------------------------------------------------------------------------------
def np_dense(p, x):
    x = np.asarray(x, np.float64) @ np.asarray(p["kernel"], np.float64)
    return x + np.asarray(p["bias"], np.float64) if "bias" in p else x


def np_mlp(hidden, out, x):
    """Dense -> ReLU -> Dense."""
    return np_dense(out, np.maximum(np_dense(hidden, x), 0.0))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def noised(params, seed, scale):
    """Every parameter plus N(0, scale²) noise (numpy: no extra compiles), as float32 numpy arrays."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (np.asarray(x) + scale * rng.normal(size=np.shape(x))).astype(np.float32),
                        params)


# ---------------------------------------------------------------------------------------------------
# 1. Qatten
# ---------------------------------------------------------------------------------------------------
QAT_N, QAT_S, QAT_D = 3, 7, 5


def np_qatten(params, q, e, s, K, E):
    """purejaxql/qatten.py's docstring on one point: q (N,), agent features e (N, D), state s (S,).
        λ_{i,h} = softmax_i((W_q,h(s) · W_k,h e_i) / √E),   Q_tot = Σ_h w_h(s) Σ_i λ_{i,h} Q_i + c(s),
        W_q,h(s) a 2-layer MLP of s, W_k,h linear (no bias), w_h(s) = |MLP_h(s)|, c(s) a 2-layer MLP."""
    p = params["params"]
    q, e, s = (np.asarray(x, np.float64) for x in (q, e, s))
    query = np_mlp(p["query_hidden"], p["query_out"], s).reshape(K, E)              # (K, E)
    keys = np_dense(p["keys"], e).reshape(len(q), K, E)                              # (N, K, E)
    total = np_mlp(p["bias_hidden"], p["bias_out"], s)[0]                            # c(s)
    w = np.abs(np_mlp(p["head_w_hidden"], p["head_w_out"], s))                       # (K,)
    for h in range(K):
        logits = np.array([query[h] @ keys[i, h] for i in range(len(q))]) / np.sqrt(E)
        lam = np.exp(logits - logits.max())
        lam /= lam.sum()
        total += w[h] * float(lam @ q)
    return total


@pytest.fixture(scope="module")
def qatten_setup():
    cfg = dict(QATTEN_DEFAULTS)
    mixer = qatten.make_mixer(cfg, Team(QAT_N, QAT_S, 4, QAT_D))
    params = jax.tree.map(np.asarray, mixer.init(jax.random.PRNGKey(0)))

    def apply(p, q, e, s):
        return mixer.apply(p, q, s, AgentContext(greedy=q, actions=jnp.zeros(q.shape, jnp.int32), obs=e))
    return dict(cfg=cfg, params=params, noisy=noised(params, 12, 1.0), apply=jax.jit(apply),
                jac=jax.jit(jax.vmap(jax.grad(apply, argnums=1), in_axes=(None, 0, 0, 0))))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["params", "noisy"])
def test_qatten_mixer_matches_numpy_equations(qatten_setup, which):
    rng = np.random.default_rng(13)
    T, Bs = 3, 4
    q = (2.0 * rng.normal(size=(T, Bs, QAT_N))).astype(np.float32)
    e = rng.normal(size=(T, Bs, QAT_N, QAT_D)).astype(np.float32)
    s = rng.normal(size=(T, Bs, QAT_S)).astype(np.float32)
    params, cfg = qatten_setup[which], qatten_setup["cfg"]
    got = np.asarray(qatten_setup["apply"](params, q, e, s))
    assert got.shape == (T, Bs)
    expected = np.array([[np_qatten(params, q[t, b], e[t, b], s[t, b], cfg["QATTEN_NUM_HEADS"],
                                    cfg["MIXER_EMBEDDING_DIM"]) for b in range(Bs)] for t in range(T)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the agents' features matter (the attention reads them), and so does the state
    assert np.abs(np.asarray(qatten_setup["apply"](params, q, e[..., ::-1, :], s)) - got).max() > 1e-3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["params", "noisy"])
def test_qatten_monotonic_in_agent_qs(qatten_setup, which):
    rng = np.random.default_rng(14)
    P = 512
    q = (5.0 * rng.normal(size=(P, QAT_N))).astype(np.float32)
    e = (2.0 * rng.normal(size=(P, QAT_N, QAT_D))).astype(np.float32)
    s = (3.0 * rng.normal(size=(P, QAT_S))).astype(np.float32)
    jac = np.asarray(qatten_setup["jac"](qatten_setup[which], q, e, s))
    assert jac.shape == (P, QAT_N) and np.all(np.isfinite(jac))
    assert np.all(jac >= 0.0), jac.min()
    assert np.mean(jac > 1e-6) > 0.5  # non-trivial: Q_tot really depends on the agents' values
    # ∂Q_tot/∂Q_i = Σ_h w_h λ_{i,h} differs between agents (not a plain sum)
    assert np.abs(jac - jac.mean(-1, keepdims=True)).max() > 1e-2


@pytest.mark.timeout(120)
def test_qatten_is_affine_in_agent_qs(qatten_setup):
    """Given the state and the agents' features, Q_tot = Σ_i k_i(s, e) Q_i + c(s): its gradient in q does not
    depend on q. So on a game whose observations do not show the actions (the two-step game), Qatten has
    VDN's additive class of joint values (see test_two_step_qatten_settles_for_vdns_additive_fit)."""
    rng = np.random.default_rng(21)
    P = 64
    e = rng.normal(size=(P, QAT_N, QAT_D)).astype(np.float32)
    s = rng.normal(size=(P, QAT_S)).astype(np.float32)
    jacs = [np.asarray(qatten_setup["jac"](qatten_setup["noisy"], (5.0 * rng.normal(size=(P, QAT_N))).astype(
        np.float32), e, s)) for _ in range(2)]
    np.testing.assert_allclose(jacs[0], jacs[1], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# 2. QPLEX
# ---------------------------------------------------------------------------------------------------
QP_N, QP_A, QP_S, QP_D = 3, 4, 6, 5
JOINT = np.array(list(itertools.product(range(QP_A), repeat=QP_N)))      # (A^N, N) every joint action
QP_MLPS = ("transform_w", "transform_b", "keys", "agents", "actions")


def qplex_mlps(params):
    """{name: (hidden layer, output layer)} of QPLEX's five 2-layer state MLPs."""
    p = params["params"]
    return {name: (p[name]["Dense_0"], p[name]["Dense_1"]) for name in QP_MLPS}


def np_transform(params, s):
    """w_i(s) = |MLP(s)|_i + 1e-10 > 0, b_i(s) = MLP(s)_i: (N,), (N,)."""
    m = qplex_mlps(params)
    return np.abs(np_mlp(*m["transform_w"], s)) + 1e-10, np_mlp(*m["transform_b"], s)


def np_qplex(params, q, v, u, s, K):
    """purejaxql/qplex.py's docstring on one point: q (N,) = Q_i(τ_i, u_i), v (N,) = V_i, joint action u (N,),
    state s (S,):  Q'_i = w_i Q_i + b_i,  V'_i = w_i V_i + b_i,  A'_i = Q'_i - V'_i,
        λ_i(s, u) = Σ_k |key_k(s)|_i σ(agent_k(s))_i σ(action_k(s, u))_i,   Q_tot = Σ_i V'_i + Σ_i λ_i A'_i."""
    m = qplex_mlps(params)
    N = len(q)
    w, b = np_transform(params, s)
    q_t, v_t = w * np.asarray(q, np.float64) + b, w * np.asarray(v, np.float64) + b
    joint = np.concatenate([s, np.eye(QP_A)[np.asarray(u)].ravel()])
    keys = (np.abs(np_mlp(*m["keys"], s)) + 1e-10).reshape(K, N)
    agent_w = np_sigmoid(np_mlp(*m["agents"], s)).reshape(K, N)
    action_w = np_sigmoid(np_mlp(*m["actions"], joint)).reshape(K, N)
    lam = (keys * agent_w * action_w).sum(0)
    return float(v_t.sum() + (lam * (q_t - v_t)).sum())


def random_tables(rng, P):
    """P random (N, A) Q tables with well separated values (no near ties) and availability masks with at
    least one available action per agent (and some unavailable)."""
    base = np.sort(rng.normal(size=(P, QP_N, QP_A)), -1) + np.arange(QP_A) * 0.5    # gaps >= 0.5
    tables = np.take_along_axis(base, rng.permuted(np.tile(np.arange(QP_A), (P, QP_N, 1)), axis=-1), -1)
    avail = (rng.random((P, QP_N, QP_A)) < 0.7).astype(np.float32)
    avail[np.arange(P)[:, None], np.arange(QP_N)[None], rng.integers(0, QP_A, (P, QP_N))] = 1.0
    assert (avail == 0).any()
    return (2.0 * tables).astype(np.float32), avail


@pytest.fixture(scope="module")
def qplex_setup():
    cfg = dict(QPLEX_DEFAULTS)
    mixer = qplex.make_mixer(cfg, Team(QP_N, QP_S, QP_A, QP_D))
    params = jax.tree.map(np.asarray, mixer.init(jax.random.PRNGKey(0)))

    def apply(p, q, v, u, s):
        return mixer.apply(p, q, s, AgentContext(greedy=v, actions=u, obs=jnp.zeros(q.shape + (QP_D,))))

    def all_joint(p, table, avail, s):
        """Q_tot of every joint action of one (N, A) table: V_i = max over the available actions."""
        q = table[jnp.arange(QP_N), JOINT]                                             # (J, N)
        v = jnp.where(avail > 0, table, -jnp.inf).max(-1)
        return apply(p, q, jnp.broadcast_to(v, q.shape), jnp.asarray(JOINT), jnp.broadcast_to(s, (len(JOINT), QP_S)))
    return dict(cfg=cfg, params=params, noisy=noised(params, 15, 1.0), apply=jax.jit(apply),
                all_joint=jax.jit(jax.vmap(all_joint, in_axes=(None, 0, 0, 0))),
                grad=jax.jit(jax.vmap(jax.grad(apply, argnums=1), in_axes=(None, 0, 0, 0, 0))))


@pytest.fixture(scope="module")
def qplex_cases(qplex_setup):
    """P random (state, Q table, availability) cases and the mixer's Q_tot of every joint action, for both
    parameter sets."""
    rng = np.random.default_rng(16)
    P = 64
    tables, avail = random_tables(rng, P)
    s = (2.0 * rng.normal(size=(P, QP_S))).astype(np.float32)
    out = {which: np.asarray(qplex_setup["all_joint"](qplex_setup[which], tables, avail, s))
           for which in ("params", "noisy")}
    return dict(tables=tables, avail=avail, s=s, out=out, P=P)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["params", "noisy"])
def test_qplex_mixer_matches_numpy_equations(qplex_setup, which):
    rng = np.random.default_rng(17)
    P = 24
    tables, avail = random_tables(rng, P)
    u = rng.integers(0, QP_A, size=(P, QP_N))
    q = np.take_along_axis(tables, u[..., None], -1)[..., 0]
    v = np.where(avail > 0, tables, -np.inf).max(-1)
    s = (2.0 * rng.normal(size=(P, QP_S))).astype(np.float32)
    params, K = qplex_setup[which], qplex_setup["cfg"]["QPLEX_NUM_KERNEL"]
    got = np.asarray(qplex_setup["apply"](params, q, v, u, s))
    expected = np.array([np_qplex(params, q[p], v[p], u[p], s[p], K) for p in range(P)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the advantages enter without gradient (as the authors' code): ∂Q_tot/∂Q_i = w_i(s) > 0 exactly
    grad = np.asarray(qplex_setup["grad"](params, q, v, u, s))
    np.testing.assert_allclose(grad, np.array([np_transform(params, s[p])[0] for p in range(P)]), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["params", "noisy"])
def test_qplex_greedy_joint_action_is_the_agents_greedy_actions(qplex_setup, qplex_cases, which):
    """IGM: over every available joint action, Q_tot is largest at the agents' own greedy actions, and there
    (every advantage 0) Q_tot = Σ_i V'_i = Σ_i (w_i(s) V_i + b_i(s))."""
    c, params = qplex_cases, qplex_setup[which]
    out = c["out"][which]                                                              # (P, J)
    for p in range(c["P"]):
        ok = np.all(c["avail"][p][np.arange(QP_N), JOINT] > 0, axis=-1)                # available joint actions
        greedy = np.where(c["avail"][p] > 0, c["tables"][p], -np.inf).argmax(-1)      # per-agent argmax
        g = int(np.flatnonzero((JOINT == greedy).all(-1))[0])
        assert ok[g] and ok.sum() < len(JOINT)
        others = out[p][ok & (np.arange(len(JOINT)) != g)]
        assert out[p, g] > others.max(), (p, out[p, g], others.max())               # strictly the best
        w, b = np_transform(params, c["s"][p])
        v = c["tables"][p][np.arange(QP_N), greedy]
        assert out[p, g] == pytest.approx(float((w * v + b).sum()), rel=1e-4, abs=1e-4)


@pytest.mark.timeout(120)
def test_qplex_is_not_monotonic(qplex_setup, qplex_cases):
    """Unlike QMIX / Qatten, QPLEX's λ_i(s, u) depend on the whole joint action, so raising one agent's own
    value can lower Q_tot: rankings of joint actions no monotonic mixer f(Q_1(u_1), ..., Q_N(u_N)) can give.
    (Its jacobian in q does not show it: the advantages carry no gradient, ∂Q_tot/∂Q_i = w_i > 0.)"""
    c, K = qplex_cases, qplex_setup["cfg"]["QPLEX_NUM_KERNEL"]
    index = {tuple(u): j for j, u in enumerate(JOINT)}
    for which in ("params", "noisy"):
        out, found = c["out"][which], []
        for p, j, i in itertools.product(range(c["P"]), range(len(JOINT)), range(QP_N)):
            u = JOINT[j]
            for a in range(QP_A):
                better = u.copy()
                better[i] = a
                k = index[tuple(better)]
                if c["tables"][p, i, a] > c["tables"][p, i, u[i]] and out[p, k] < out[p, j] - 1e-2:
                    found.append((p, j, k))
        assert found, which
        # one of them, recomputed from the equations in float64
        p, j, k = found[0]
        params, v = qplex_setup[which], np.where(c["avail"][p] > 0, c["tables"][p], -np.inf).max(-1)
        lo, hi = (np_qplex(params, c["tables"][p][np.arange(QP_N), JOINT[x]], v, JOINT[x], c["s"][p], K)
                  for x in (k, j))
        assert lo < hi - 1e-2


# ---------------------------------------------------------------------------------------------------
# 3. weighted QMIX's loss
# ---------------------------------------------------------------------------------------------------
WQ_T, WQ_BS, WQ_N, WQ_A, WQ_S = 4, 6, 3, 4, 5
WQ_CFG = dict(WQMIX_DEFAULTS, MIXER_EMBEDDING_DIM=8, MIXER_HYPERNET_HIDDEN_DIM=16, WQMIX_CENTRAL_MIXER_DIM=16,
              WQMIX_ALPHA=0.3)


def np_qmixer(params, q, s, N, E):
    """QMIX's documented equations (purejaxql/qmix.py) on one point."""
    p = params["params"]
    w1 = np.abs(np_mlp(p["HyperNetwork_0"]["Dense_0"], p["HyperNetwork_0"]["Dense_1"], s)).reshape(N, E)
    b1 = np_dense(p["Dense_0"], s)
    w2 = np.abs(np_mlp(p["HyperNetwork_1"]["Dense_0"], p["HyperNetwork_1"]["Dense_1"], s))
    v = np_mlp(p["HyperNetwork_2"]["Dense_0"], p["HyperNetwork_2"]["Dense_1"], s)[0]
    h = np.asarray(q, np.float64) @ w1 + b1
    h = np.where(h > 0, h, np.expm1(np.minimum(h, 0.0)))
    return float(h @ w2 + v)


def np_central(params, q, s):
    """Q̂*(s, u) = MLP_C([q, s]) + V(s): 3 ReLU layers of C then a linear output, V a 2-layer MLP of s
    (flax names: Dense_0-2 the ReLU layers, Dense_3/Dense_4 V's output/hidden, Dense_5 the output)."""
    p = params["params"]
    x = np.concatenate([np.asarray(q, np.float64), np.asarray(s, np.float64)])
    for k in range(3):
        x = np.maximum(np_dense(p[f"Dense_{k}"], x), 0.0)
    return float(np_dense(p["Dense_5"], x)[0] + np_mlp(p["Dense_4"], p["Dense_3"], s)[0])


def np_masked_argmax(q, avail):
    return int(np.argmax(np.where(avail > 0, q, -np.inf)))


def np_weighted_loss(weighting, alpha, params, target_params, x, lambda_t):
    """wqmix.py's docstring written out as loops -> (squared errors, TD errors, weights w), (T, Bs) each."""
    T, Bs, N = x["actions"].shape
    E = WQ_CFG["MIXER_EMBEDDING_DIM"]
    y = np.zeros((T, Bs))
    for b in range(Bs):
        v = np.zeros(T)
        for t in range(T):
            u_next = [np_masked_argmax(x["q"][t + 1, b, i], x["avail"][t + 1, b, i]) for i in range(N)]
            star_next = [x["central_q_target"][t + 1, b, i, u_next[i]] for i in range(N)]
            v[t] = np_central(target_params["central"], star_next, x["state"][t + 1, b])
        r = x["rewards"][:, b].sum(-1)
        d = x["discount"][:, b]
        if lambda_t is None:                        # 1-step targets
            y[:, b] = r + d * v
        else:                                       # λ-returns, backwards (rl_math.lambda_returns)
            lam = lambda_t[:, b]
            g = r[T - 1] + d[T - 1] * v[T - 1]
            y[T - 1, b] = g
            for t in reversed(range(T - 1)):
                g = r[t] + d[t] * ((1.0 - lam[t]) * v[t] + lam[t] * g)
                y[t, b] = g
    squared, delta, w = np.zeros((T, Bs)), np.zeros((T, Bs)), np.zeros((T, Bs))
    for t in range(T):
        for b in range(Bs):
            u = x["actions"][t, b]
            q_taken = [x["q"][t, b, i, u[i]] for i in range(N)]
            q_tot = np_qmixer(params["qmix"], q_taken, x["state"][t, b], N, E)
            q_star = np_central(params["central"], [x["central_q"][t, b, i, u[i]] for i in range(N)],
                                x["state"][t, b])
            if weighting == "ow":
                full = q_tot < y[t, b]
            else:
                greedy = [np_masked_argmax(x["q"][t, b, i], x["avail"][t, b, i]) for i in range(N)]
                star_greedy = np_central(target_params["central"], [x["central_q_target"][t, b, i, greedy[i]]
                                                                     for i in range(N)],
                                         x["state"][t, b])
                full = y[t, b] > star_greedy or list(u) == greedy
            w[t, b] = 1.0 if full else alpha
            delta[t, b] = y[t, b] - q_tot
            squared[t, b] = w[t, b] * delta[t, b] ** 2 + (y[t, b] - q_star) ** 2
    return squared, delta, w


def make_wqmix_batch():
    """A random batch (T = 4 steps, Bs = 6 sequences, N = 3 agents, A = 4 actions) with unavailable actions,
    episode ends, a few greedy joint actions, and online / target parameters far apart."""
    rng = np.random.default_rng(18)
    T, Bs, N, A, S = WQ_T, WQ_BS, WQ_N, WQ_A, WQ_S
    mixer = wqmix.make_mixer(WQ_CFG, Team(N, S, A, 0))
    params = noised(mixer.init(jax.random.PRNGKey(1)), 19, 0.2)
    target_params = noised(mixer.init(jax.random.PRNGKey(2)), 20, 0.2)
    avail = (rng.random((T + 1, Bs, N, A)) < 0.7).astype(np.float32)
    avail[..., 0] = 1.0
    q = (3.0 * rng.normal(size=(T + 1, Bs, N, A))).astype(np.float32)
    actions = np.zeros((T, Bs, N), np.int32)
    for t, b, i in itertools.product(range(T), range(Bs), range(N)):
        actions[t, b, i] = rng.choice(np.flatnonzero(avail[t, b, i]))
    for t, b in ((0, 0), (1, 3), (3, 5)):  # some steps took the greedy joint action (CW's u_t = û_t)
        actions[t, b] = [np_masked_argmax(q[t, b, i], avail[t, b, i]) for i in range(N)]
    x = dict(q=q, q_next_target=(3.0 * rng.normal(size=q[1:].shape)).astype(np.float32), actions=actions, avail=avail,
             obs=np.zeros((T + 1, Bs, N, 0), np.float32), state=rng.normal(size=(T + 1, Bs, S)).astype(np.float32),
             rewards=(5.0 * rng.normal(size=(T, Bs, N))).astype(np.float32),
             discount=(0.9 * (rng.random((T, Bs)) > 0.25)).astype(np.float32),
             central_q=(3.0 * rng.normal(size=q.shape)).astype(np.float32),
             central_q_target=(3.0 * rng.normal(size=q.shape)).astype(np.float32))
    assert (x["discount"] == 0).any()
    lam = np.full((T, Bs), 0.6, np.float32)
    lam[1, ::2] = 0.0  # a step before a time-out: λ_t = 0
    return mixer, {"mixer": params}, {"mixer": target_params}, x, lam


@pytest.fixture(scope="module")
def wqmix_batch():
    return make_wqmix_batch()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("targets", ["1-step", "td_lambda"])
@pytest.mark.parametrize("weighting", ["ow", "cw"])
def test_weighted_qmix_loss_matches_a_python_loop(wqmix_batch, weighting, targets):
    mixer, params, target_params, x, lam = wqmix_batch
    lambda_t = lam if targets == "td_lambda" else None
    batch = Transitions(lambda_t=lambda_t, **x)
    alpha = WQ_CFG["WQMIX_ALPHA"]
    squared, delta = (np.asarray(v) for v in jax.jit(wqmix.weighted_loss(weighting)(WQ_CFG, mixer))(
        params, target_params, batch))
    sq_ref, delta_ref, w_ref = np_weighted_loss(weighting, alpha, params["mixer"], target_params["mixer"], x,
                                                lambda_t)
    assert squared.shape == delta.shape == (WQ_T, WQ_BS)
    np.testing.assert_allclose(delta, delta_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(squared, sq_ref, rtol=1e-4, atol=1e-3)
    # the weight on Q_tot's error is α exactly where the docstring says, 1 elsewhere; both happen
    assert (w_ref == alpha).any() and (w_ref == 1.0).any()
    # (the same loss with α = 1 differs by (1 - w) δ² exactly)
    full = jax.jit(wqmix.weighted_loss(weighting)({**WQ_CFG, "WQMIX_ALPHA": 1.0}, mixer))
    w = 1.0 - (np.asarray(full(params, target_params, batch)[0]) - squared) / delta ** 2
    np.testing.assert_allclose(w, w_ref, atol=1e-3)
    if targets == "td_lambda":  # the λ-returns really differ from 1-step targets
        assert np.abs(delta - np_weighted_loss(weighting, alpha, params["mixer"], target_params["mixer"], x,
                                               None)[1]).max() > 1e-2
    if weighting == "cw":  # the greedy joint actions are weighted 1 whatever their targets
        assert all(w_ref[t, b] == 1.0 for t, b in ((0, 0), (1, 3), (3, 5)))


# ---------------------------------------------------------------------------------------------------
# learning: joint-action tables of a trained program
# ---------------------------------------------------------------------------------------------------
def joint_tables(train, params, raw_obs):
    """The program's Q_tot, and weighted QMIX's unrestricted Q̂* (None for the others), of every joint
    action at the raw observations ``raw_obs`` of one state: arrays of shape (A,) * N."""
    wrapped = train.env._wrap_obs(raw_obs, None)
    obs, state = jnp.stack([wrapped[a] for a in train.env.agents]), wrapped["__all__"]        # (N, D), (S,)
    N, A = obs.shape[0], train.env.max_action_space
    joint = jnp.array(list(itertools.product(range(A), repeat=N)))                            # (J, N)

    def agent_values(p):
        _, q = train.agents.apply(p, train.agents.initial_hidden(1), obs[None, None], jnp.ones((1, 1), bool))
        return q[0, 0]                                                                         # (N, A)
    q = agent_values(params["agent"])
    chosen = q[jnp.arange(N), joint]
    ctx = AgentContext(greedy=jnp.broadcast_to(q.max(-1), chosen.shape), actions=joint,
                       obs=jnp.broadcast_to(obs, (len(joint),) + obs.shape))
    states = jnp.broadcast_to(state, (len(joint), state.shape[-1]))
    q_tot = train.parts.mixer.apply(params["mixer"], chosen, states, ctx).reshape((A,) * N)
    if "central_agent" not in params:
        return np.asarray(q_tot), None
    central = agent_values(params["central_agent"])[jnp.arange(N), joint]
    q_star = wqmix.CentralMixer(train.config["WQMIX_CENTRAL_MIXER_DIM"]).apply(params["mixer"]["central"], central,
                                                                              states)
    return np.asarray(q_tot), np.asarray(q_star).reshape((A,) * N)


def train_seeds(module, config, env, seeds):
    train = module.make_train(config, env)
    out = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), seeds))
    params = jax.tree.map(np.asarray, out["runner_state"].train.params)
    return train, np.asarray(out["metrics"]["test_returned_episode_returns"][:, -1]), params


def seed(params, i):
    return jax.tree.map(lambda x: x[i], params)


# ---------------------------------------------------------------------------------------------------
# 4. the weighted-QMIX paper's matrix game (Rashid et al. 2020, §6.1): under uniform exploration the
# monotonic projection of QMIX (and VDN's additive one) prefers the safe 0 region; weighting the joint
# actions the targets call worse by α = 0.1 finds the optimum 8 per agent.
# Measured (4 seeds, 2e4 steps): greedy team return vdn, qmix [0, 0, 0, 0]; owqmix, cwqmix [16] * 4, with
# Q̂* = 2 x payoff to 0.01 and Q_tot largest at (0, 0) (16.0-16.5 there; about -2 (OW) / -12 (CW) elsewhere),
# both with the shipped Q̂* width 256 and with the 32 used here (half the time). With α = 1 (no weighting)
# owqmix gives [0] * 4, as does cwqmix; at the shipped α, owqmix (0.5) [16] * 4 but cwqmix (0.75) [0] * 4.
# ---------------------------------------------------------------------------------------------------
MATRIX_CONFIG = {**TWO_STEP_CONFIG, "NUM_STEPS": 1, "TOTAL_TIMESTEPS": 2e4}
WQ_MATRIX = {"WQMIX_CENTRAL_MIXER_DIM": 32}  # Q̂*'s width (shipped: 256)
MATRIX_SEEDS = 4


@pytest.mark.timeout(300)
@pytest.mark.parametrize("alg,alpha,greedy", [
    ("owqmix", 0.1, 16.0), ("cwqmix", 0.1, 16.0), ("qmix", None, 0.0), ("vdn", None, 0.0),
    pytest.param("owqmix", 1.0, 0.0, marks=pytest.mark.slow)])  # α = 1: no weighting, QMIX's projection again
def test_matrix_game(alg, alpha, greedy):
    env = MatrixGame()
    config = MATRIX_CONFIG if alpha is None else {**MATRIX_CONFIG, **WQ_MATRIX, "WQMIX_ALPHA": alpha}
    train, returns, params = train_seeds(importlib.import_module(f"purejaxql.{alg}_ps"), config, env,
                                         MATRIX_SEEDS)
    np.testing.assert_array_equal(returns, greedy)
    if alg.endswith("wqmix"):
        for i in range(MATRIX_SEEDS):  # Q̂* is right whatever α; Q_tot ranks (0, 0) first only when weighted
            q_tot, q_star = joint_tables(train, seed(params, i), env._obs())
            np.testing.assert_allclose(q_star, 2.0 * np.asarray(env.payoff), atol=0.5)  # unrestricted: exact
            if greedy == 16.0:
                assert np.unravel_index(q_tot.argmax(), q_tot.shape) == (0, 0), q_tot
                assert q_tot[0, 0] == pytest.approx(16.0, abs=1.0)


# ---------------------------------------------------------------------------------------------------
# 5. the QMIX paper's two-step game, tests/test_two_step.py's setting (ε = 1 throughout, 3 seeds).
# Measured: greedy team return 16 on every seed for qplex, owqmix and cwqmix (also on 8 seeds); OW/CW's Q_tot
# and Q̂* at test_two_step's QMIX fixed point to 0.01; QPLEX's Q_tot to 0.07, 0.04 and 3.45 (seed 2 is still
# short of it everywhere, ranking right). Qatten: [14, 14, 16] (8 seeds: 14 on 6), see below.
# ---------------------------------------------------------------------------------------------------
def two_step_tables(train, params):
    """(3 states, 2, 2) Q_tot and Q̂* (or None) tables, as test_two_step.fixed_point's."""
    env = train.env._env
    tables = [joint_tables(train, params, env._obs(TwoStepState(jnp.int32(s), jnp.int32(0)))) for s in range(3)]
    q_tot = np.stack([t[0] for t in tables])
    return q_tot, None if tables[0][1] is None else np.stack([t[1] for t in tables])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("alg,tol", [("qplex", 5.0), pytest.param("owqmix", 0.5, marks=pytest.mark.slow),
                                     pytest.param("cwqmix", 0.5, marks=pytest.mark.slow)])
# OW / CW (slow): a game a monotonic mixer solves; the matrix game above is their default-suite check
def test_two_step_game_finds_the_optimum(alg, tol):
    """Greedy team return 16 (both agents paid 8) on every seed, from values that were learnt: an untrained
    network's table is >= 16 away from the fixed point (test_two_step's docstring), these are within ``tol``."""
    train, returns, params = train_seeds(importlib.import_module(f"purejaxql.{alg}_ps"), TWO_STEP_CONFIG,
                                         TwoStepGame(), TWO_STEP_SEEDS)
    np.testing.assert_array_equal(returns, 16.0)
    for i in range(TWO_STEP_SEEDS):
        q_tot, q_star = two_step_tables(train, seed(params, i))
        np.testing.assert_allclose(q_tot, fixed_point("qmix"), atol=tol)
        if q_star is not None:
            np.testing.assert_allclose(q_star, fixed_point("qmix"), atol=tol)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_step_qatten_settles_for_vdns_additive_fit():
    """Qatten's Q_tot is affine in the agents' values at a given state (test_qatten_is_affine_in_agent_qs), and
    the two-step game's observations do not show the actions: in states 2A and 2B it can only fit VDN's
    additive table, 13 for the optimum (1, 1) of 2B, less than 2A's 14. Measured: Q_tot in 2A / 2B within
    0.35 of VDN's fixed point on every seed; greedy return [14, 14, 16] (seed 2's first state still
    undecided, 13.3 for both of agent 0's actions). So Qatten does NOT reach 16 on every seed here."""
    train, returns, params = train_seeds(importlib.import_module("purejaxql.qatten_ps"), TWO_STEP_CONFIG,
                                         TwoStepGame(), TWO_STEP_SEEDS)
    for i in range(TWO_STEP_SEEDS):
        q_tot, _ = two_step_tables(train, seed(params, i))
        np.testing.assert_allclose(q_tot[1:], fixed_point("vdn")[1:], atol=0.6)
    assert (returns == 14.0).any(), returns


# ---------------------------------------------------------------------------------------------------
# 6. bad input
# ---------------------------------------------------------------------------------------------------
SMALL = dict(NUM_STEPS=2, TOTAL_TIMESTEPS=1e3, LEARNING_STARTS=0, BUFFER_SIZE=64)
# a tiny budget on MPE (the shipped configs' TEST_NUM_STEPS: one whole episode)
TINY = dict(NUM_ENVS=2, NUM_STEPS=8, TOTAL_TIMESTEPS=64, BUFFER_SIZE=16, BUFFER_BATCH_SIZE=2, AGENT_HIDDEN_DIM=8,
            LEARNING_STARTS=0, TEST_NUM_ENVS=2, TARGET_UPDATE_INTERVAL=2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module,key,value,message", [
    ("vdn_ps", "QPLEX_NUM_KERNEL", 4, "config key 'QPLEX_NUM_KERNEL' is not used by vdn (it belongs to qplex)"),
    ("qmix_ps", "WQMIX_ALPHA", 0.1, "config key 'WQMIX_ALPHA' is not used by qmix (it belongs to owqmix/cwqmix)"),
    ("qplex_ns", "QATTEN_NUM_HEADS", 2, "config key 'QATTEN_NUM_HEADS' is not used by qplex (it belongs to qatten)"),
    ("qatten_ps", "MIXER_INIT_SCALE", 0.1,
     "config key 'MIXER_INIT_SCALE' is not used by qatten (it belongs to qmix/owqmix/cwqmix)"),
    ("owqmix_ps", "WQMIX_ALPHA", 1.5, "WQMIX_ALPHA must be in [0, 1], got 1.5"),
    ("cwqmix_ns", "WQMIX_ALPHA", -0.1, "WQMIX_ALPHA must be in [0, 1], got -0.1"),
    ("cwqmix_ps", "WQMIX_ALPHA", "abc", "WQMIX_ALPHA must be a number, got 'abc'"),
    ("qplex_ps", "QPLEX_NUM_KERNEL", 0, "QPLEX_NUM_KERNEL must be > 0, got 0"),
])
def test_a_key_of_another_algorithm_or_out_of_range_is_named(module, key, value, message):
    make_train = importlib.import_module(f"purejaxql.{module}").make_train
    with pytest.raises(ConfigError) as e:
        make_train({**SMALL, key: value}, TwoStepGame())
    assert str(e.value) == message


@pytest.mark.timeout(120)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wqmix_alpha_at_the_ends_of_its_range_is_accepted(alpha):
    from purejaxql import owqmix_ps
    assert owqmix_ps.make_train({**SMALL, "WQMIX_ALPHA": alpha}, TwoStepGame()).config["WQMIX_ALPHA"] == alpha


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module,args,message", [
    ("vdn_ps", ["alg.QPLEX_NUM_KERNEL=4"], "config key 'QPLEX_NUM_KERNEL' is not used by vdn (it belongs to qplex)"),
    ("owqmix_ps", ["alg.WQMIX_ALPHA=1.5"], "WQMIX_ALPHA must be in [0, 1], got 1.5"),
    ("cwqmix_ps_pretrained", ["alg.WQMIX_ALPHA=-1"], "WQMIX_ALPHA must be in [0, 1], got -1.0"),
    ("qatten_ns", ["alg.QPLEX_NUM_KERNEL=3"],
     "config key 'QPLEX_NUM_KERNEL' is not used by qatten (it belongs to qplex)"),
])
def test_bad_input_on_the_command_line_exits_2_before_jax_loads(module, args, message, tmp_path):
    """``python -m purejaxql.<module> ...``: one ``purejaxql: error:`` line naming the key (and its owner),
    exit code 2, no traceback, nothing left in the working directory, and JAX / jaxmarl never imported."""
    code = (f"import sys\nfrom purejaxql.{module} import SPEC\ntry:\n    SPEC.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print('EXIT', e.code, 'jax' in sys.modules, 'jaxmarl' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    tiny = [f"alg.{k}={v}" for k, v in TINY.items()]  # were the check missing: a short run, not 2e6 steps
    r = subprocess.run([sys.executable, "-c", code, *args, *tiny], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=100)
    assert "EXIT 2 False False" in r.stdout, r.stdout + r.stderr[-2000:]
    assert r.stderr.count("purejaxql: error:") == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# 7. the 12 new entry modules on their shipped configs; every new shipped config composes
# ---------------------------------------------------------------------------------------------------
DEFAULT_RUNS = ("qplex_ns",)  # a new mixer with per-agent networks; the rest (pretrained, central agents): slow
MODULES = [f"{a}_{v}" for a in NEW_ALGS for v in ("ps", "ns", "ps_pretrained")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module", [m if m in DEFAULT_RUNS else pytest.param(m, marks=pytest.mark.slow)
                                    for m in MODULES])
def test_each_new_module_trains_on_its_shipped_mpe_config(module):
    from purejaxql.environments import make_env
    from purejaxql.experiment import load_pretrained
    spec = importlib.import_module(f"purejaxql.{module}").SPEC
    cfg = {**shipped(spec.default_alg_config), **TINY}
    env = make_env(cfg)
    pretrained = load_pretrained(cfg, spec, env)
    train = spec.make_train(cfg, env, pretrained)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    m = jax.tree.map(np.asarray, out["metrics"])
    learnt = np.arange(train.config["NUM_UPDATES"]) >= train.config["FIRST_LEARN_UPDATE"]
    assert learnt.any() and np.all(np.isfinite(m["loss"][learnt])), m["loss"]
    assert np.isfinite(m["test_returned_episode_returns"][-1])
    params = out["runner_state"].train.params
    assert ("central_agent" in params) == (spec.algorithm in ("owqmix", "cwqmix"))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


NEW_CONFIGS = [f"{a}_{e}" for a in NEW_ALGS for e in ("mpe", "smax", "smax_cpu", "mpe_tag_pretrained")]
ALG_VALUES = {"qplex": {"QPLEX_NUM_KERNEL": 10}, "owqmix": {"WQMIX_ALPHA": 0.5}, "cwqmix": {"WQMIX_ALPHA": 0.75},
              "qatten": {"QATTEN_NUM_HEADS": 4}}


@pytest.mark.timeout(120)
def test_every_new_shipped_config_composes_and_resolves():
    """Each new shipped config is listed (``+alg=``), composes through its hydra defaults, resolves for its
    algorithm (every key known to it, values in range) and sets the algorithm's own keys; the CPU-sized SMAX
    configs set the same keys as the GPU-sized ones beside them."""
    from purejaxql.cli import available_algs
    from purejaxql.config import resolve_config
    from purejaxql.spec import Spec
    assert set(NEW_CONFIGS) <= set(available_algs())
    for name in NEW_CONFIGS:
        alg = name.split("_")[0]
        cfg = shipped(name)
        spec = Spec(alg, "ps", pretrained=name.endswith("_pretrained"))
        assert spec.default_alg_config == name or not name.endswith(("_mpe", "_pretrained"))
        resolved = resolve_config(cfg, spec)
        for key, value in ALG_VALUES[alg].items():
            assert resolved[key] == value, (name, key)
        if name.endswith("_cpu"):
            assert set(cfg) == set(shipped(name[:-len("_cpu")])), name
        if name.endswith("_pretrained"):
            assert cfg["ENV_NAME"] == "MPE_simple_tag_v3" and "agent_0" in cfg["PRETRAINED_AGENTS"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_qplex_often_recovers_the_matrix_game_optimum():
    """QPLEX on the weighted-QMIX matrix game (uniform exploration): its Q_tot can rank (0, 0) first, but
    reaching it is seed-dependent here. Measured with 4 epochs per update, LR 0.005 and 4 attention kernels
    for 5e4 steps: 5 of these 8 seeds (7 of 8 with another draw of initial parameters); 2-3 of 4 with the
    shipped sizes, 1 epoch and 2e4 steps. QMIX and VDN reach it on no seed. Asserted: at least half of 8
    seeds, and no seed worse than -24 (one agent switched, the other not yet)."""
    cfg = {**MATRIX_CONFIG, "TOTAL_TIMESTEPS": 5e4, "NUM_EPOCHS": 4, "LR": 0.005, "QPLEX_NUM_KERNEL": 4}
    train = importlib.import_module("purejaxql.qplex_ps").make_train(cfg, MatrixGame())
    out = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 8))
    returns = np.asarray(out["metrics"]["test_returned_episode_returns"][:, -1])
    assert (returns == 16.0).sum() >= 4, returns
    assert (returns >= -24.0).all(), returns
