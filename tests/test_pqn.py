"""PQN: the learner trains on exactly what the actors saw, its Q(λ) targets match a plain loop (time-outs
included), and the three modules run on MPE and SMAX (GRU, BatchNorm, memory window, per-agent
parameters, independent learners, a frozen pretrained agent) with tiny budgets."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from envs import EchoGame
from purejaxql import pqn_ns, pqn_ps, pqn_ps_pretrained
from purejaxql.checkpoint import agent_params, resolve_path
from purejaxql.environments import make_env

SPREAD = make_env({"ENV_NAME": "MPE_simple_spread_v3"})


def tiny(**extra):
    return {"NUM_ENVS": 4, "NUM_STEPS": 8, "TOTAL_TIMESTEPS": 4 * 8 * 3, "NUM_EPOCHS": 2, "NUM_MINIBATCHES": 2,
            "AGENT_HIDDEN_DIM": 16, "TEST_NUM_ENVS": 4, "TEST_INTERVAL": 0.5, **extra}


def params_moved(before, after, per_agent=False):
    """Per leaf: did any entry change? With per-agent params (leading axis N): per agent."""
    def moved(a, b):
        diff = np.asarray(a) != np.asarray(b)
        return diff.reshape(diff.shape[0], -1).any(1) if per_agent else diff.any()
    return jax.tree.map(moved, before, after)


def stages(config, env=SPREAD):
    """A PQN program's stages, its initial state and initial agent params (no full training compile)."""
    train = pqn_ps.make_train(config, env)
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    return train, train.parts, runner, runner.train.params["agent"]


def test_learner_replays_exactly_what_the_actor_saw():
    """GRU agents with a memory window: unrolling the learner over (context + rollout) from the stored
    hidden state gives the actor's Q-values on every rollout step, across rollouts and episode ends."""
    W, T = 3, 8
    train, P, runner, params = stages(tiny(AGENT_TYPE="rnn", MEMORY_WINDOW=W, NUM_STEPS=T, NORM_TYPE="layer_norm"))

    @jax.jit
    def rollouts(runner):
        carry, steps1, h = P.rollout(params, runner.env, 0.5, jax.random.PRNGKey(1))
        context = P.next_context(runner.context, steps1, h)
        for _ in range(3):  # a few rollouts: 26-step episodes end inside them
            carry, steps, h = P.rollout(params, carry, 0.5, jax.random.PRNGKey(2))
            g, mask = P.targets(params, carry, steps)
            data = P.samples(steps, context, g, mask)
            context = P.next_context(context, steps, h)
        _, q = train.agents.learner.apply(params, data.hidden, data.obs, data.first)
        return q[-T:], steps.q, data, steps
    q_learner, q_actor, data, steps = rollouts(runner)
    assert data.obs.shape[0] == W + T and np.asarray(steps.first).any()  # an episode started in it
    np.testing.assert_allclose(np.asarray(q_learner), np.asarray(q_actor), rtol=1e-5, atol=1e-5)


def py_targets(r, done, timeout, v_next, gamma, lam, timeout_terminal):
    """Plain loop over one env's rollout: (T,) team reward, done, timeout, next-state value."""
    T = len(r)
    g, mask = np.zeros(T), np.ones(T)
    for t in reversed(range(T)):
        if done[t]:
            g[t] = r[t]
            mask[t] = 0.0 if (timeout[t] and not timeout_terminal) else 1.0
            continue
        if t == T - 1:
            g[t] = r[t] + gamma * v_next[t]
        elif timeout[t + 1] and not timeout_terminal:  # G_{t+1} depends on a lost observation
            g[t] = r[t] + gamma * v_next[t]
        else:
            g[t] = r[t] + gamma * ((1 - lam) * v_next[t] + lam * g[t + 1])
    return g, mask


@pytest.mark.parametrize("mixer,timeout_terminal", [("vdn", False), ("none", False), ("vdn", True)])
def test_q_lambda_targets_match_a_plain_loop(mixer, timeout_terminal):
    """On EchoGame episodes end by true terminals (random) and by time-outs (every 6 steps), both inside
    the rollout; EchoGame's available actions exclude one action per step (the max is over available ones)."""
    T, B, gamma, lam = 30, 3, 0.9, 0.7
    env = EchoGame()
    train, P, runner, params = stages(tiny(NUM_STEPS=T, NUM_ENVS=B, TOTAL_TIMESTEPS=T * B, NUM_MINIBATCHES=1,
                                           GAMMA=gamma, LAMBDA=lam, REW_SCALE=2.0, MIXER=mixer,
                                           TIMEOUT_AS_TERMINAL=timeout_terminal), env)

    @jax.jit
    def go(runner):
        carry, steps, _ = P.rollout(params, runner.env, 0.3, jax.random.PRNGKey(3))
        _, q_end = train.agents.apply(params, carry.hidden, carry.obs[None], carry.first[None])
        return steps, q_end[0], carry.avail, P.targets(params, carry, steps)
    steps, q_end, avail_end, (g, mask) = jax.tree.map(np.asarray, go(runner))
    assert steps.timeout.any() and (steps.done & ~steps.timeout).any()  # both kinds of end
    q_next = np.concatenate([steps.q[1:], q_end[None]])
    avail_next = np.concatenate([steps.avail[1:], avail_end[None]])
    assert (avail_next == 0).any()
    v_next = np.where(avail_next > 0, q_next, -np.inf).max(-1)                    # (T, B, N) max_a Q_i
    r = 2.0 * steps.rewards                                                    # (T, B, N)
    for b in range(B):
        for i in range(env.num_agents) if mixer == "none" else [None]:
            r_b = r[:, b].sum(-1) if i is None else r[:, b, i]
            v_b = v_next[:, b].sum(-1) if i is None else v_next[:, b, i]
            want_g, want_mask = py_targets(r_b, steps.done[:, b], steps.timeout[:, b], v_b, gamma, lam,
                                           timeout_terminal)
            got = g[:, b] if i is None else g[:, b, i]
            np.testing.assert_allclose(got, want_g, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(mask[:, b], want_mask)


def reference_learn(cfg, learner, params, data, rng, vdn):
    """PQN's learning stage written from the formula: NUM_EPOCHS passes, each over NUM_MINIBATCHES
    minibatches of a random permutation of the S samples; per minibatch one step of global-norm clipping
    and Adam / RAdam on loss = mean over the loss mask of (Σ_i Q_i(o_i, a_i) - G)² (MIXER none: of
    (Q_i(o_i, a_i) - G_i)², every agent's term). -> (params, mean loss, mean Q of the taken actions)."""
    E, n_mb = cfg["NUM_EPOCHS"], cfg["NUM_MINIBATCHES"]
    total = E * n_mb * cfg["NUM_UPDATES"]

    def loss(p, idx):
        mb = [jnp.take(x, idx, axis=0 if k == "hidden" else 1) for k, x in zip(data._fields, data)]
        obs, first, hidden, a_tm1, g, mask = mb
        _, q = learner.apply({"params": p}, hidden, obs, first)                  # (1, M, Nt, A)
        q_tm1 = jnp.take_along_axis(q, a_tm1[..., None], -1)[..., 0]              # (1, M, Nt)
        if vdn:
            err = (q_tm1.sum(-1) - g) ** 2                                       # (1, M)
            return jnp.sum(mask * err) / jnp.sum(mask), q_tm1.mean()
        err = (q_tm1 - g) ** 2                                                   # (1, M, Nt)
        return jnp.sum(mask[..., None] * err) / (jnp.sum(mask) * err.shape[-1]), q_tm1.mean()

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    direction = optax.scale_by_radam() if cfg["OPTIMIZER"] == "radam" else optax.scale_by_adam()
    state, losses, qs, k = direction.init(params), [], [], 0
    S = data.first.shape[1]
    for key in jax.random.split(rng, E):
        for idx in jax.random.permutation(key, S).reshape(n_mb, S // n_mb):
            (l, qv), g = grad(params, idx)
            norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))
            g = jax.tree.map(lambda x: x * jnp.minimum(1.0, cfg["MAX_GRAD_NORM"] / norm), g)
            u, state = direction.update(g, state, params)
            lr = cfg["LR"] + min(k / total, 1.0) * (1e-10 - cfg["LR"]) if cfg["LR_LINEAR_DECAY"] else cfg["LR"]
            params = jax.tree.map(lambda p, d: p - lr * d, params, u)
            losses.append(float(l))
            qs.append(float(qv))
            k += 1
    return params, np.mean(losses), np.mean(qs)


@pytest.mark.parametrize("mixer,optimizer,decay", [("vdn", "adam", False), ("none", "radam", True)])
def test_learning_stage_matches_a_reference(mixer, optimizer, decay):
    """Two epochs of two minibatches on a real rollout (time-outs masked out of the loss): the updated
    parameters, the mean loss and the mean Q-value equal :func:`reference_learn`."""
    env = EchoGame()
    cfg = tiny(NUM_STEPS=12, NUM_ENVS=4, TOTAL_TIMESTEPS=12 * 4 * 2, AGENT_TYPE="ff", MIXER=mixer,
               OPTIMIZER=optimizer, LR_LINEAR_DECAY=decay, LR=0.01, MAX_GRAD_NORM=0.5, GAMMA=0.9)
    train, P, runner, params = stages(cfg, env)

    @jax.jit
    def go(runner):
        carry, steps, h = P.rollout(params, runner.env, 0.5, jax.random.PRNGKey(3))
        g, mask = P.targets(params, carry, steps)
        data = P.samples(steps, runner.context, g, mask)
        return data, P.learn(runner.train, data, jax.random.PRNGKey(4))
    data, (ts, loss, qvals) = go(runner)
    assert 0 < float(data.mask.sum()) < data.mask.size  # time-outs are left out
    want, want_loss, want_q = reference_learn(train.config, train.agents.learner, params["params"], data,
                                              jax.random.PRNGKey(4), mixer == "vdn")
    assert int(ts.grad_steps) == 4
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(qvals), want_q, rtol=1e-5, atol=1e-7)
    for got, ref, p0 in zip(jax.tree.leaves(ts.params["agent"]["params"]), jax.tree.leaves(want),
                            jax.tree.leaves(params["params"])):
        assert not np.allclose(np.asarray(ref), np.asarray(p0))
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=2e-4, atol=2e-6)


def test_an_update_reports_the_loss_and_q_values_of_its_learning_stage():
    """The update's metrics carry the learning stage's mean loss and mean Q-value, each under its name
    (recomputed here from the same rollout and keys), and its ε."""
    env = EchoGame()
    train, P, runner, params = stages(tiny(AGENT_TYPE="ff", NUM_STEPS=6, REW_SCALE=5.0), env)

    @jax.jit
    def both(runner):
        _, metrics = P.update(runner, jnp.int32(0))
        _, k_roll, k_learn = jax.random.split(runner.rng, 3)
        carry, steps, _ = P.rollout(params, runner.env, metrics["epsilon"], k_roll)
        g, mask = P.targets(params, carry, steps)
        _, loss, qvals = P.learn(runner.train, P.samples(steps, runner.context, g, mask), k_learn)
        return metrics, loss, qvals
    metrics, loss, qvals = jax.tree.map(np.asarray, both(runner))
    assert float(metrics["epsilon"]) == train.config["EPSILON_START"]
    assert abs(float(loss) - float(qvals)) > 1e-3  # distinguishable
    np.testing.assert_allclose([metrics["loss"], metrics["qvals"]], [loss, qvals], rtol=1e-5)


def check(train, out, updates, per_agent=False):
    cfg = train.config
    m = jax.tree.map(np.asarray, out["metrics"])
    assert (m["grad_steps"] == np.arange(1, updates + 1) * cfg["NUM_EPOCHS"] * cfg["NUM_MINIBATCHES"]).all()
    assert np.isfinite(m["loss"]).all() and np.isfinite(m["qvals"]).all()
    assert np.isfinite(m["test_returned_episode_returns"][-1])
    assert m["epsilon"][-1] < m["epsilon"][0]  # annealed
    before = jax.jit(train.init)(jax.random.PRNGKey(0)).train.params["agent"]
    after = out["runner_state"].train.params["agent"]
    return m, params_moved(before, after, per_agent)


def test_pqn_ns_gru_batch_norm_memory_window_on_smax():
    env = make_env({"ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "2s3z"})
    cfg = tiny(AGENT_TYPE="rnn", NORM_TYPE="batch_norm", NORM_INPUT=True, MEMORY_WINDOW=2, NUM_STEPS=16,
               TOTAL_TIMESTEPS=4 * 16 * 3, TEST_NUM_STEPS=30, REW_SCALE=10.0)
    train = pqn_ns.make_train(cfg, env)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    m, moved = check(train, out, 3, per_agent=True)
    for leaf in jax.tree.leaves(moved["params"]) + jax.tree.leaves(moved["batch_stats"]):
        assert leaf.shape == (env.num_agents,) and leaf.all()  # every agent's params and running stats moved
    assert "test_returned_won_episode" in m
    ctx = out["runner_state"].context
    assert ctx.obs.shape[:2] == (2, 4) and ctx.hidden.shape == (4, env.num_agents, 16)


def test_pqn_ps_independent_learners_on_agents_of_different_shapes():
    env = make_env({"ENV_NAME": "MPE_simple_speaker_listener_v4"})
    train = pqn_ps.make_train(tiny(MIXER="none", NORM_TYPE="none", LOG_AGENTS_SEPARATELY=True,
                                   TEST_NUM_STEPS=26), env)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    m, moved = check(train, out, 3)
    assert all(jax.tree.leaves(moved))
    per_agent = [m[f"test_returned_episode_returns_{a}"][-1] for a in env.agents]
    np.testing.assert_allclose(sum(per_agent), m["test_returned_episode_returns"][-1], rtol=1e-5)


def test_pqn_ps_pretrained_trains_beside_a_frozen_prey():
    env = make_env({"ENV_NAME": "MPE_simple_tag_v3"})
    prey = agent_params(resolve_path("pkg:checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors"), "agent_0")
    train = pqn_ps_pretrained.make_train(tiny(TEST_NUM_STEPS=26, LOG_AGENTS_SEPARATELY=True), env,
                                         {"agent_0": prey})
    out = jax.jit(train)(jax.random.PRNGKey(0))
    m, moved = check(train, out, 3)
    assert all(jax.tree.leaves(moved))
    # only the predators' shared network is trained: the prey's GRU is nowhere in the train state
    state = out["runner_state"].train
    assert "GRU_0" not in state.params["agent"]["params"]
    assert "norm_0" in state.params["agent"]["params"]  # PQN's LayerNorm predators
    team = sum(m[f"test_returned_episode_returns_adversary_{i}"][-1] for i in range(3))
    np.testing.assert_allclose(team, m["test_returned_episode_returns"][-1], rtol=1e-5)
    assert np.isfinite(m["test_returned_episode_returns_agent_0"][-1])


@pytest.mark.timeout(900)
def test_pqn_vdn_learns_simple_spread():
    """About a minute of training on simple_spread (2e5 env steps, a smaller network than pqn_mpe's):
    PQN-VDN's greedy team return must end far above a random policy's -81.6 ± 24.5
    (`python bench/random_policy.py MPE_simple_spread_v3`) and its own untrained start."""
    cfg = {"NUM_ENVS": 64, "NUM_STEPS": 16, "TOTAL_TIMESTEPS": 2e5, "NUM_EPOCHS": 4, "NUM_MINIBATCHES": 8,
           "AGENT_HIDDEN_DIM": 128, "NUM_LAYERS": 2, "NORM_TYPE": "layer_norm", "LR": 0.002, "GAMMA": 0.9,
           "LAMBDA": 0.3, "MAX_GRAD_NORM": 1.0, "EPSILON_FINISH": 0.1, "TEST_NUM_ENVS": 128, "TEST_NUM_STEPS": 26,
           "TEST_INTERVAL": 0.1, "TIMEOUT_AS_TERMINAL": False}
    train = pqn_ps.make_train(cfg, SPREAD)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    ret = np.asarray(out["metrics"]["test_returned_episode_returns"])
    print("greedy team return over training:", np.round(ret[::20], 1), ret[-1])
    assert ret[-1] > -55.0 and ret[-1] > ret[0] + 15
