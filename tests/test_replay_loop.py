"""The replay learners' update, checked on the loop itself against references written from the formulas.

One learner step on a hand-built batch of stored chunk pairs (random observations, global states,
episode starts, available actions, dones and time-outs): the loss and the updated parameters must equal a
plain reference of the whole loss (sequence assembly, double Q with online selector and target values,
masks, reward scale, mixers) and of the optimiser (global-norm clipping, Adam / RAdam, linear LR decay).
The target network must be synced every TARGET_UPDATE_INTERVAL updates and never in between, with
Polyak weight TAU. The rollout must store the global state and time-out flag of each observation's step.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from envs import EchoGame
from purejaxql import iql_ps, qmix_ps, vdn_ns, vdn_ps
from purejaxql.q_learning import Chunk

ENV = EchoGame()
N, A, T, Bs = ENV.num_agents, ENV.num_actions, 5, 6
BASE = dict(NUM_ENVS=4, NUM_STEPS=T, TOTAL_TIMESTEPS=4 * T * 4, BUFFER_SIZE=64, BUFFER_BATCH_SIZE=Bs,
            AGENT_HIDDEN_DIM=8, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=2, TEST_NUM_ENVS=2, GAMMA=0.8,
            REW_SCALE=3.0, MAX_GRAD_NORM=0.5, LR=0.01, MIXER_EMBEDDING_DIM=4, MIXER_HYPERNET_HIDDEN_DIM=8,
            MIXER_INIT_SCALE=1.0, TEST_DURING_TRAINING=False)


def make(module, **extra):
    cfg = {**BASE, **extra}
    if module is not qmix_ps:
        cfg = {k: v for k, v in cfg.items() if not k.startswith("MIXER_")}
    return module.make_train(cfg, ENV)


def hand_built_sample(train, seed=0):
    """(Bs, 2, ...) pairs of consecutive chunks, as the buffer returns them."""
    env, H = train.env, train.agents.learner.hidden_dim
    D, S = env.obs_size, env.state_size
    ks = jax.random.split(jax.random.PRNGKey(seed), 9)
    avail = jax.random.bernoulli(ks[0], 0.6, (Bs, 2, T, N, A)).at[..., 0].set(True)  # >= 1 available
    actions = jax.random.categorical(ks[1], jnp.where(avail, 0.0, -jnp.inf)).astype(jnp.int32)
    dones = jax.random.bernoulli(ks[2], 0.25, (Bs, 2, T))
    return Chunk(obs=jax.random.normal(ks[3], (Bs, 2, T, N, D)),
                 state=jax.random.normal(ks[4], (Bs, 2, T, S)),
                 first=jax.random.bernoulli(ks[5], 0.3, (Bs, 2, T)),
                 avail=avail.astype(jnp.float32), actions=actions,
                 rewards=jax.random.normal(ks[6], (Bs, 2, T, N)),
                 dones=dones, timeout=dones & jax.random.bernoulli(ks[7], 0.5, (Bs, 2, T)),
                 hidden=jax.random.normal(ks[8], (Bs, 2, N, H)))


def two_param_sets(train):
    """Online and target parameters that differ (at init they are equal, which would hide a swap)."""
    p = jax.jit(train.init)(jax.random.PRNGKey(1)).train.params
    q = jax.jit(train.init)(jax.random.PRNGKey(2)).train.params
    return p, q


# ------------------------------------------------------------------------------- references (formulas)

def hyper(p, s):
    return jax.nn.relu(s @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]) @ p["Dense_1"]["kernel"] \
        + p["Dense_1"]["bias"]


def qmix_mix(p, q, s):
    """QMIX's docstring, one (q (N,), s (S,)): Q_tot = ELU(q |W1(s)| + b1(s)) |W2(s)| + V(s)."""
    p = p["params"]
    E = p["Dense_0"]["bias"].shape[0]
    w1 = jnp.abs(hyper(p["HyperNetwork_0"], s)).reshape(N, E)
    b1 = s @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    w2 = jnp.abs(hyper(p["HyperNetwork_1"], s))
    v = hyper(p["HyperNetwork_2"], s)[0]
    return jnp.dot(jax.nn.elu(q @ w1 + b1), w2) + v


def reference_loss(alg, cfg, learner, params, target_params, sample):
    """The whole replay loss written from the formulas (rlax names: q_tm1 at step t, q_t at t + 1)."""
    def seq(x):  # sequence b: the T steps of its first chunk, then the first step of the second
        return jnp.concatenate([x[:, 0], x[:, 1, :1]], axis=1).swapaxes(0, 1)      # (T+1, Bs, ...)
    obs, first, states, avail = seq(sample.obs), seq(sample.first), seq(sample.state), seq(sample.avail)
    a_tm1, r_t = sample.actions[:, 0].swapaxes(0, 1), sample.rewards[:, 0].swapaxes(0, 1) * cfg["REW_SCALE"]
    done, timeout = sample.dones[:, 0].swapaxes(0, 1), sample.timeout[:, 0].swapaxes(0, 1)  # (T, Bs)
    _, q = learner.apply(params["agent"], sample.hidden[:, 0], obs, first)              # (T+1, Bs, N, A)
    _, q_bar = learner.apply(target_params["agent"], sample.hidden[:, 0], obs, first)
    # double Q: the online net picks the best available next action, the target net values it
    best = jnp.argmax(jnp.where(avail[1:] > 0, jax.lax.stop_gradient(q[1:]), -jnp.inf), axis=-1)
    q_t = jax.lax.stop_gradient(jnp.take_along_axis(q_bar[1:], best[..., None], -1)[..., 0])   # (T, Bs, N)
    q_tm1 = jnp.take_along_axis(q[:-1], a_tm1[..., None], -1)[..., 0]                           # (T, Bs, N)
    discount_t = cfg["GAMMA"] * (1.0 - done)
    if alg == "iql":  # each agent on its own reward: the agent axis stays
        r, v, pred, discount_t = r_t, q_t, q_tm1, discount_t[..., None]
    elif alg == "vdn":
        r, v, pred = r_t.sum(-1), q_t.sum(-1), q_tm1.sum(-1)
    else:
        mix = jax.vmap(jax.vmap(qmix_mix, (None, 0, 0)), (None, 0, 0))
        r, v, pred = r_t.sum(-1), mix(target_params["mixer"], q_t, states[1:]), mix(params["mixer"], q_tm1, states[:-1])
    lam = cfg.get("TD_LAMBDA", 0.0)
    y = [None] * T  # TD(λ) backwards, plain loop; λ = 0: the 1-step target r + γ(1 - d) V
    y[T - 1] = r[T - 1] + discount_t[T - 1] * v[T - 1]
    for t in reversed(range(T - 1)):
        # a step whose next step is a time-out (left out of the loss) does not lean on that step's target
        lam_t = lam * (1.0 if cfg["TIMEOUT_AS_TERMINAL"] else 1.0 - timeout[t + 1])
        lam_t = lam_t[..., None] if alg == "iql" and np.ndim(lam_t) else lam_t
        y[t] = r[t] + discount_t[t] * ((1.0 - lam_t) * v[t] + lam_t * y[t + 1])
    delta2 = (jax.lax.stop_gradient(jnp.stack(y)) - pred) ** 2
    if alg == "iql":
        delta2 = jnp.mean(delta2, axis=-1)
    w = jnp.ones_like(delta2) if cfg["TIMEOUT_AS_TERMINAL"] else 1.0 - timeout  # time-outs leave the loss
    return jnp.sum(w * delta2) / jnp.sum(w)


def reference_steps(alg, cfg, learner, params, target_params, sample, steps):
    """``steps`` gradient steps of global-norm clipping + Adam/RAdam with the configured LR schedule."""
    learn_updates = cfg["NUM_UPDATES"] - cfg["FIRST_LEARN_UPDATE"]
    direction = (optax.scale_by_radam() if cfg["OPTIMIZER"] == "radam" else optax.scale_by_adam())
    state = direction.init(params)
    grad = jax.jit(jax.grad(functools.partial(reference_loss, alg, cfg, learner)))
    for k in range(steps):
        g = grad(params, target_params, sample)
        norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))
        g = jax.tree.map(lambda x: x * jnp.minimum(1.0, cfg["MAX_GRAD_NORM"] / norm), g)
        u, state = direction.update(g, state, params)
        frac = min(k / (cfg["NUM_EPOCHS"] * learn_updates), 1.0)
        lr = cfg["LR"] + frac * (1e-10 - cfg["LR"]) if cfg["LR_LINEAR_DECAY"] else cfg["LR"]
        params = jax.tree.map(lambda p, d: p - lr * d, params, u)
    return params


# ----------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("module,alg,extra", [
    (qmix_ps, "qmix", {}),
    (vdn_ps, "vdn", {"TIMEOUT_AS_TERMINAL": True}),
    (iql_ps, "iql", {"AGENT_TYPE": "ff"}),
    (vdn_ns, "vdn", {}),
    (qmix_ps, "qmix", {"TD_LAMBDA": 0.6}),
    (vdn_ps, "vdn", {"TD_LAMBDA": 0.8, "TIMEOUT_AS_TERMINAL": True}),
    (iql_ps, "iql", {"AGENT_TYPE": "ff", "TD_LAMBDA": 1.0}),
], ids=["qmix", "vdn_timeout_terminal", "iql_ff", "vdn_ns", "qmix_td_lambda", "vdn_td_lambda_timeout_terminal",
        "iql_td_lambda_1"])
def test_loss_of_a_hand_built_batch_matches_the_formula(module, alg, extra):
    train = make(module, **extra)
    assert train.config["TIMEOUT_AS_TERMINAL"] == extra.get("TIMEOUT_AS_TERMINAL", False)  # EchoGame truncates
    P, sample = train.parts, hand_built_sample(train)
    params, target = two_param_sets(train)
    loss, (qvals, _) = jax.jit(lambda p, t, s: P.loss(p, t, P.sequences(s)))(params, target, sample)
    want = jax.jit(functools.partial(reference_loss, alg, train.config, train.agents.learner))(params, target, sample)
    np.testing.assert_allclose(float(loss), float(want), rtol=2e-5)
    # the batch exercises what the loss must get right: the mask, episode ends and resets, masked argmax
    assert sample.timeout[:, 0].any() and (sample.dones[:, 0] & ~sample.timeout[:, 0]).any()
    assert (sample.avail == 0).any() and sample.first.any()


@pytest.mark.parametrize("optimizer,decay,agent_type", [("adam", True, "rnn"), ("radam", False, "ff")])
def test_updated_parameters_match_a_reference_optimiser_step(optimizer, decay, agent_type):
    """Three learner steps on the hand-built batch: gradients of the reference loss, clipping, the
    optimiser and the LR schedule (decaying to ~0 over the 3 learning updates) all reach the update
    (feed-forward agents: the learner's last step apart, without gradient; the reference unrolls all T+1)."""
    train = make(qmix_ps, OPTIMIZER=optimizer, LR_LINEAR_DECAY=decay, NUM_EPOCHS=1, AGENT_TYPE=agent_type)
    cfg, P, sample = train.config, train.parts, hand_built_sample(train, seed=3)
    assert cfg["NUM_UPDATES"] - cfg["FIRST_LEARN_UPDATE"] == 3
    params, target = two_param_sets(train)
    ts = jax.jit(train.init)(jax.random.PRNGKey(0)).train
    ts = ts._replace(params=params, target_params=target, opt_state=P.tx.init(params))
    step = jax.jit(lambda ts, s: P.learn_step(ts, P.sequences(s))[0])
    for _ in range(3):
        ts = step(ts, sample)
    want = reference_steps("qmix", cfg, train.agents.learner, params, target, sample, 3)
    assert int(ts.grad_steps) == 3
    for got, ref, p0 in zip(jax.tree.leaves(ts.params), jax.tree.leaves(want), jax.tree.leaves(params)):
        assert not np.allclose(np.asarray(ref), np.asarray(p0))  # the reference really moved
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=2e-4, atol=2e-6)
    # the target network is never touched by a learner step
    for got, t0 in zip(jax.tree.leaves(ts.target_params), jax.tree.leaves(target)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(t0))


@pytest.mark.parametrize("tau", [1.0, 0.4])
def test_target_is_synced_every_interval_and_never_in_between(tau):
    I = 3
    train = make(vdn_ps, TARGET_UPDATE_INTERVAL=I, TAU=tau, TOTAL_TIMESTEPS=4 * T * 8)
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    update = jax.jit(train.parts.update)
    prev_target = runner.train.target_params
    synced = 0
    for u in range(train.config["NUM_UPDATES"]):
        runner, _ = update(runner, jnp.int32(u))
        params, target = runner.train.params, runner.train.target_params
        if (u + 1) % I == 0:
            want = jax.tree.map(lambda p, t: tau * p + (1 - tau) * t, params, prev_target)
            synced += 1
        else:
            want = prev_target
            if u >= train.config["FIRST_LEARN_UPDATE"]:  # params moved, the target did not follow
                assert any(not np.allclose(np.asarray(p), np.asarray(t))
                           for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target)))
        for got, w in zip(jax.tree.leaves(target), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(w), rtol=1e-6, atol=1e-7)
        prev_target = target
    assert synced == 2


def test_rollout_stores_each_steps_state_and_time_out_flag():
    """QMIX's global state at step t is the one of observation t (here: the agents' raw observations
    joined), and exactly the episode ends at the time limit are flagged as time-outs."""
    train = make(qmix_ps, NUM_STEPS=30, TOTAL_TIMESTEPS=4 * 30 * 2)
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    rollout = jax.jit(lambda r: train.parts.rollout(r.train.params["agent"], r.env, 0.5, jax.random.PRNGKey(1)))
    c = jax.tree.map(np.asarray, rollout(runner)[1])                           # chunk, fields (B, 30, ...)
    raw = ENV.obs_len
    np.testing.assert_array_equal(c.state, c.obs[:, :, :, :raw].reshape(*c.obs.shape[:2], N * raw))
    steps_in = np.rint(c.obs[:, :, 0, raw - 2] * ENV.max_steps)   # t of each observation
    np.testing.assert_array_equal(c.first, steps_in == 0)
    np.testing.assert_array_equal(c.timeout, c.dones & (steps_in == ENV.max_steps - 1))
    assert c.timeout.any() and (c.dones & ~c.timeout).any()  # both kinds of episode end happened


def test_each_epoch_learns_on_a_fresh_sample_and_the_metrics_average_the_epochs():
    """NUM_EPOCHS = 3: the learning stage takes one learner step per epoch, each on its own buffer sample
    (keys split from the stage's key), and reports the mean loss and mean Q-value of the three steps."""
    train = make(vdn_ps, NUM_EPOCHS=3)
    P = train.parts
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    update = jax.jit(P.update)
    for u in range(2):
        runner, _ = update(runner, jnp.int32(u))
    rng = jax.random.PRNGKey(7)
    ts, _, loss, qvals = jax.jit(P.learn)(runner.train, runner.buffer, rng)

    @jax.jit
    def by_hand(ts):
        out = []
        for k in jax.random.split(rng, 3):
            ts, m, _ = P.learn_step(ts, P.sequences(P.replay.buffer.sample(runner.buffer, k).experience))
            out.append(m)
        return ts, jnp.array(out)                                       # (3 epochs, (loss, qvals))
    ts_ref, m = jax.tree.map(np.asarray, by_hand(runner.train))
    assert len(np.unique(m[:, 0])) == 3 and not np.allclose(m[:, 0], m[:, 1])  # distinct steps and metrics
    np.testing.assert_allclose([float(loss), float(qvals)], m.mean(0), rtol=1e-5)
    assert int(ts.grad_steps) == int(runner.train.grad_steps) + 3
    for got, ref in zip(jax.tree.leaves(ts.params), jax.tree.leaves(ts_ref.params)):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-7)
