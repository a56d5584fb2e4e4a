"""LSTM agents (AGENT_TYPE=lstm) and the last action in the agent's input (OBS_LAST_ACTION).

The LSTM cell is checked against a numpy loop written from its equations (resets inside the sequence), its
one-step acting path against the scan, and every loop (replay: iql, qmix, vdn with frozen agents; PQN with a
memory window) trains with it. The last-action wrapper is checked over many random steps of MPE and SMAX
against the actions really taken, episode starts (auto-resets included) and the plain wrapper's output.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import EchoGame, ImageGame
from purejaxql import iql_ps, pqn_ps, qmix_ns, vdn_ps, vdn_ps_pretrained
from purejaxql.config import ConfigError, resolve_config
from purejaxql.environments import CTRolloutManager, make_env, stack_agents
from purejaxql.networks import LSTM, AgentNetwork, SeparateAgents, SharedAgents
from purejaxql.pretrained import PretrainedAgents, network_of
from purejaxql.spec import SPECS

ECHO = EchoGame()
N, A, RAW = ECHO.num_agents, ECHO.num_actions, ECHO.obs_len
T, B, H = 8, 4, 8
REPLAY = dict(NUM_ENVS=B, NUM_STEPS=T, TOTAL_TIMESTEPS=B * T * 3, BUFFER_SIZE=64, BUFFER_BATCH_SIZE=2,
              AGENT_HIDDEN_DIM=H, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=1, TEST_NUM_ENVS=2,
              AGENT_TYPE="lstm")
PQN = dict(NUM_ENVS=B, NUM_STEPS=T, TOTAL_TIMESTEPS=B * T * 3, NUM_EPOCHS=1, NUM_MINIBATCHES=2,
           AGENT_HIDDEN_DIM=H, TEST_NUM_ENVS=2, AGENT_TYPE="lstm", MEMORY_WINDOW=3)


# ---------------------------------------------------------------------------------------------------
# the LSTM cell
# ---------------------------------------------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(p, s0, x, first):
    """The LSTM equations step by step in float64: p the LSTM_0 parameters, s0 (B, 2H) = [c, h],
    x (T, B, E), first (T, B) -> (s_T (B, 2H), hs (T, B, H))."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    Hd = p["w_hi"].shape[0]
    c, h = np.asarray(s0, np.float64)[:, :Hd], np.asarray(s0, np.float64)[:, Hd:]
    hs = []
    for t in range(x.shape[0]):
        reset = np.asarray(first[t])[:, None]
        c, h = np.where(reset, 0.0, c), np.where(reset, 0.0, h)
        pre = {g: np.asarray(x[t], np.float64) @ p[f"w_i{g}"] + p[f"b_i{g}"] + h @ p[f"w_h{g}"] for g in "ifgo"}
        i, f, g, o = sigmoid(pre["i"]), sigmoid(pre["f"]), np.tanh(pre["g"]), sigmoid(pre["o"])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.concatenate([c, h], -1), np.stack(hs)


def lstm_inputs(seed=0, Tn=7, Bn=5, E=4, Hd=6):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(k[0], (Tn, Bn, E))
    s0 = jax.random.normal(k[1], (Bn, 2 * Hd))
    first = jax.random.bernoulli(k[2], 0.25, (Tn, Bn)).at[3, 1].set(True).at[0, 0].set(True)
    return x, s0, first, k[3]


def test_lstm_cell_matches_the_equations_with_resets_inside_the_sequence():
    x, s0, first, k = lstm_inputs()
    cell = LSTM(6)
    p = jax.jit(cell.init)(k, s0, x, first)
    lstm = p["params"]
    assert np.all(np.asarray(lstm["b_if"]) == 1.0) and not np.any(np.asarray(lstm["b_ii"]))  # forget bias 1
    # random biases too, so each parameter's role is checked
    rng = np.random.default_rng(9)
    p = jax.tree.map(lambda v: np.asarray(v) + 0.3 * rng.standard_normal(v.shape).astype(np.float32), p)
    apply = jax.jit(cell.apply)
    s_T, hs = apply(p, s0, x, first)
    want_s, want_hs = numpy_lstm(p["params"], s0, x, first)
    assert s_T.shape == (5, 12) and hs.shape == (7, 5, 6)
    np.testing.assert_allclose(np.asarray(hs), want_hs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s_T), want_s, rtol=1e-5, atol=1e-5)
    # a reset really matters here: without it (first all False) the outputs differ after the reset
    _, hs_no_reset = apply(p, s0, x, jnp.zeros_like(first).at[0].set(first[0]))
    assert not np.allclose(np.asarray(hs_no_reset[3:, 1]), np.asarray(hs[3:, 1]), atol=1e-4)

    # the one-step acting path (T = 1, no scan) gives the scan's states and outputs
    s = s0
    for t in range(x.shape[0]):
        s, h_t = apply(p, s, x[t:t + 1], first[t:t + 1])
        np.testing.assert_allclose(np.asarray(h_t[0]), np.asarray(hs[t]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s), np.asarray(s_T), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", [SharedAgents, SeparateAgents], ids=["ps", "ns"])
def test_lstm_agents_carry_c_and_h_and_act_step_by_step_as_they_learn(variant):
    """Agent variants carry (B, N, 2H) = [c, h]; acting one step at a time gives the Q-values and final
    state of unrolling the whole sequence."""
    Tn, Bn, D = 6, 3, 7
    net = AgentNetwork(action_dim=A, hidden_dim=H, cell="lstm")
    agents = variant(net, N, D)
    assert agents.hidden_dim == 2 * H and agents.initial_hidden(Bn).shape == (Bn, N, 2 * H)
    params = jax.jit(agents.init)(jax.random.PRNGKey(0))
    assert "LSTM_0" in params["params"] and "GRU_0" not in params["params"]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(k1, (Tn, Bn, N, D))
    first = jax.random.bernoulli(k2, 0.3, (Tn, Bn))
    h0 = jax.random.normal(k3, (Bn, N, 2 * H))
    apply = jax.jit(agents.apply)
    h_T, q = apply(params, h0, obs, first)
    h = h0
    for t in range(Tn):
        h, q_t = apply(params, h, obs[t:t + 1], first[t:t + 1])
        np.testing.assert_allclose(np.asarray(q_t[0]), np.asarray(q[t]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_T), rtol=1e-5, atol=1e-5)


def shapes_of(net, d_in):
    """The parameter shapes of ``net`` for inputs of size d_in (no computation)."""
    return jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, net.carry_dim)), jnp.zeros((1, 1, d_in)),
                          jnp.zeros((1, 1), bool))


def test_gru_checkpoints_keep_their_names_and_lstm_ones_are_recognised():
    """A GRU network's parameters keep the names old checkpoints have; the pretrained loader rebuilds an
    LSTM network (width, cell, layers, agent id) from its parameters' shapes alone."""
    gru = shapes_of(AgentNetwork(action_dim=A, hidden_dim=H), RAW)["params"]
    assert sorted(gru) == ["Dense_0", "Dense_1", "GRU_0"]
    assert sorted(gru["GRU_0"]) == sorted(["b_hn"] + [f"{k}{g}" for k in ("w_i", "b_i", "w_h") for g in "rzn"])
    for net, d_in in ((AgentNetwork(action_dim=A, hidden_dim=H, cell="lstm"), RAW + N),
                      (AgentNetwork(action_dim=A, hidden_dim=5, cell="lstm", num_layers=2), RAW)):
        rebuilt, with_id = network_of(shapes_of(net, d_in), "agent_0", RAW, N, A)
        assert with_id == (d_in == RAW + N)
        assert (rebuilt.recurrent, rebuilt.cell, rebuilt.hidden_dim, rebuilt.carry_dim, rebuilt.num_layers) == \
            (True, "lstm", net.hidden_dim, 2 * net.hidden_dim, net.num_layers)
        gru_net, _ = network_of({"params": gru}, "agent_0", RAW, N, A)
        assert gru_net.cell == "gru" and gru_net.carry_dim == H
    # an input with the last action fits only a run that has one to give
    with_last = shapes_of(AgentNetwork(action_dim=A, hidden_dim=H, cell="lstm"), RAW + A)
    with pytest.raises(ConfigError, match=f"size {RAW + A}, but this env gives {RAW} .*OBS_LAST_ACTION=True"):
        network_of(with_last, "agent_0", RAW, N, A)
    assert network_of(with_last, "agent_0", RAW, N, A, last_action=True)[1] is False


# ---------------------------------------------------------------------------------------------------
# frozen pretrained agents and the last action
# ---------------------------------------------------------------------------------------------------
FROZEN_H = 6  # the frozen LSTM carries 2 * 6 > H: the carried hidden state is padded to it


def frozen_params(cell, d_in, seed=5):
    net = AgentNetwork(action_dim=A, hidden_dim=FROZEN_H, cell=cell)
    return net, jax.jit(net.init)(jax.random.PRNGKey(seed), jnp.zeros((1, net.carry_dim)), jnp.zeros((1, 1, d_in)),
                                  jnp.zeros((1, 1), bool))


def test_frozen_agents_get_the_observation_they_were_trained_on():
    """Run with OBS_LAST_ACTION (input [obs, last action, id]): a frozen network trained without the last
    action (agent_1) sees [obs, id], one trained with it (agent_2) [obs, last action, id]; their LSTM states
    ride in the carried hidden state (padded to the widest network's)."""
    nets = {1: frozen_params("lstm", RAW + N, seed=4), 2: frozen_params("lstm", RAW + A + N, seed=5)}
    learner_net = AgentNetwork(action_dim=A, hidden_dim=H)  # a GRU learner: H < the frozen LSTMs' 2 * FROZEN_H
    D = RAW + A + N
    pretrained = {f"agent_{i}": p for i, (_, p) in nets.items()}
    agents = PretrainedAgents(learner_net, ECHO.agents, D, RAW, pretrained, last_action=True)
    assert agents.hidden_dim == 2 * FROZEN_H and agents.frozen_input_len == {1: RAW, 2: RAW + A}
    Tn, Bn = 5, 3
    obs = jax.random.normal(jax.random.PRNGKey(7), (Tn, Bn, N, D))
    first = jnp.zeros((Tn, Bn), bool).at[2, 1].set(True)

    @jax.jit
    def both(obs, first):
        _, q = agents.apply(agents.init(jax.random.PRNGKey(8)), agents.initial_hidden(Bn), obs, first)
        refs = []
        for i, (net, p) in nets.items():
            own = obs[:, :, i, :RAW + A] if i == 2 else obs[:, :, i, :RAW]
            x = jnp.concatenate([own, jnp.broadcast_to(jnp.eye(N)[i], (Tn, Bn, N))], -1)
            refs.append(net.apply(p, jnp.zeros((Bn, 2 * FROZEN_H)), x, first)[1])
        return q, refs
    q, refs = both(obs, first)
    for i, q_ref in zip(nets, refs):
        np.testing.assert_allclose(np.asarray(q[:, :, i]), np.asarray(q_ref), rtol=1e-5, atol=1e-5)
    # without OBS_LAST_ACTION there is no last action to give agent_2
    with pytest.raises(ConfigError, match=f"'agent_2' take observations of size {RAW + A + N}.*OBS_LAST_ACTION=True"):
        PretrainedAgents(learner_net, ECHO.agents, RAW + N, RAW, pretrained, last_action=False)


# ---------------------------------------------------------------------------------------------------
# training with LSTM agents (every loop, every variant)
# ---------------------------------------------------------------------------------------------------
def check_trained(train, metrics, runner, evaluated=False):
    """Finite loss and mean Q at every update that learnt, every LSTM parameter moved."""
    m = jax.tree.map(np.asarray, metrics)
    learning = m["grad_steps"] > 0
    assert learning.any() and np.isfinite(m["loss"][learning]).all() and np.isfinite(m["qvals"][learning]).all()
    if evaluated:
        assert np.isfinite(m["test_returned_episode_returns"][-1])
    before = jax.jit(train.init)(jax.random.PRNGKey(0)).train.params["agent"]["params"]["LSTM_0"]
    after = runner.train.params["agent"]["params"]["LSTM_0"]
    assert all(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(before),
                                                                           jax.tree.leaves(after)))


@pytest.mark.parametrize("module,extra", [
    (qmix_ns, {"STATE_LAST_ACTION": True}),
    pytest.param(iql_ps, {"OBS_LAST_ACTION": True}, marks=pytest.mark.slow)],
    ids=["qmix_ns_state_last_action", "iql_ps_last_action"])
def test_replay_learners_train_lstm_agents(module, extra):
    train = module.make_train({**REPLAY, "TEST_DURING_TRAINING": False, **extra}, ECHO)
    assert train.env.obs_size == RAW + (A if "OBS_LAST_ACTION" in extra else 0) + (N if module is iql_ps else 0)
    plain_state = CTRolloutManager(ECHO, 2).state_size
    assert train.env.state_size == plain_state + (N * A if "STATE_LAST_ACTION" in extra else 0)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    check_trained(train, out["metrics"], out["runner_state"])
    # the replay buffer stores the LSTM's [c, h] as the sequences' hidden state
    assert out["runner_state"].buffer.experience.hidden.shape[-2:] == (N, 2 * H)


@pytest.mark.slow
def test_vdn_with_a_frozen_lstm_agent_and_last_actions_trains_and_evaluates():
    """vdn_ps_pretrained: shared LSTM learners with OBS_LAST_ACTION beside a frozen LSTM agent trained with
    last actions; greedy evaluation runs inside the program."""
    _, p = frozen_params("lstm", RAW + A + N)
    train = vdn_ps_pretrained.make_train({**REPLAY, "OBS_LAST_ACTION": True}, ECHO, {"agent_2": p})
    (i, net, _, with_id), = train.agents.frozen
    assert i == 2 and net.cell == "lstm" and with_id and train.agents.frozen_input_len[2] == RAW + A
    assert train.env.obs_size == RAW + A + N and train.agents.hidden_dim == 2 * max(H, FROZEN_H)
    out = jax.jit(train)(jax.random.PRNGKey(0))
    check_trained(train, out["metrics"], out["runner_state"], evaluated=True)


def test_pqn_lstm_with_memory_window_trains_and_replays_what_the_actor_saw():
    """pqn_ps, LSTM agents, MEMORY_WINDOW=3, OBS_LAST_ACTION: a few updates learn; then, with fixed
    parameters, the learner's unroll over (memory window + rollout) from the context's stored [c, h] gives
    the actor's Q-values on every rollout step (across episode ends)."""
    train = pqn_ps.make_train({**PQN, "OBS_LAST_ACTION": True, "TEST_DURING_TRAINING": False}, ECHO)
    P = train.parts

    @jax.jit
    def go(key):
        runner, metrics = train.run(train.init(key), jnp.arange(train.config["NUM_UPDATES"]))
        params = runner.train.params["agent"]
        carry, steps, h = P.rollout(params, runner.env, 0.5, jax.random.PRNGKey(1))
        context = P.next_context(runner.context, steps, h)
        carry, steps, h = P.rollout(params, carry, 0.5, jax.random.PRNGKey(2))
        g, mask = P.targets(params, carry, steps)
        data = P.samples(steps, context, g, mask)
        _, q = train.agents.learner.apply(params, data.hidden, data.obs, data.first)
        return runner, metrics, q[-T:], steps.q, data.first
    runner, metrics, q_learner, q_actor, first = go(jax.random.PRNGKey(0))
    check_trained(train, metrics, runner)
    assert runner.context.hidden.shape == (B, N, 2 * H) and runner.context.obs.shape[:2] == (3, B)
    assert np.asarray(first)[3:].any()  # an episode starts inside the rollout
    np.testing.assert_allclose(np.asarray(q_learner), np.asarray(q_actor), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# the last-action wrapper on real envs
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_cfg,steps", [
    ({"ENV_NAME": "MPE_simple_spread_v3"}, 60),
    ({"ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "3m", "ENV_KWARGS": {"max_steps": 12}}, 40)],
    ids=["mpe_spread", "smax_3m"])
def test_last_action_is_the_previous_action_and_zero_at_each_episode_start(env_cfg, steps):
    """OBS_LAST_ACTION (each agent's own, in its observation) and STATE_LAST_ACTION (every agent's, in the
    global state)."""
    env = make_env(env_cfg)
    Bn = 4
    plain = CTRolloutManager(env, Bn)
    with_last = CTRolloutManager(env, Bn, add_last_action=True)
    in_state = CTRolloutManager(env, Bn, add_state_last_action=True)
    Na, An, L = plain.num_agents, plain.max_action_space, plain.max_obs_length
    assert with_last.obs_size == plain.obs_size + An

    @jax.jit
    def run(key):
        k_reset, k_run = jax.random.split(key)
        obs_p, _ = plain.batch_reset(k_reset)
        obs_l, state = with_last.batch_reset(k_reset)
        obs_s, _ = in_state.batch_reset(k_reset)

        def step(c, k):
            state, _ = c
            k_act, k_step = jax.random.split(k)
            avail = with_last.get_valid_actions(state)
            acts = {a: with_last.batch_sample(kk, a, avail[a])
                    for a, kk in zip(with_last.agents, jax.random.split(k_act, Na))}
            o_p, _, _, _, _ = plain.batch_step(k_step, state, acts)
            o_s, _, _, _, _ = in_state.batch_step(k_step, state, acts)
            o_l, state, _, dones, _ = with_last.batch_step(k_step, state, acts)
            return (state, None), (stack_agents(o_p, plain.agents), stack_agents(o_l, plain.agents),
                                   stack_agents(acts, plain.agents), dones["__all__"],
                                   o_p["__all__"], o_s["__all__"])
        _, (o_p, o_l, acts, done, s_p, s_s) = jax.lax.scan(step, (state, None), jax.random.split(k_run, steps))
        first_p = stack_agents(obs_p, plain.agents)[None]
        first_l = stack_agents(obs_l, plain.agents)[None]
        return (jnp.concatenate([first_p, o_p]), jnp.concatenate([first_l, o_l]), acts, done,
                jnp.concatenate([obs_p["__all__"][None], s_p]), jnp.concatenate([obs_s["__all__"][None], s_s]))

    o_p, o_l, acts, done, s_p, s_s = jax.tree.map(np.asarray, run(jax.random.PRNGKey(0)))
    # o_*[t] (t = 0..steps) observed before the t-th action; acts[t], done[t] of step t
    starts = np.concatenate([np.ones((1, Bn), bool), done])                      # (steps + 1, B)
    assert done.sum() >= Bn and done[:-1].any()  # auto-resets happen, and are followed by steps
    # the observation without the option, and the agent id, are where they were
    np.testing.assert_allclose(o_l[..., :L], o_p[..., :L], atol=1e-5)  # (one program: XLA may fuse the copies apart)
    np.testing.assert_array_equal(o_l[..., L + An:], o_p[..., L:])
    np.testing.assert_array_equal(o_l[..., L + An:], np.broadcast_to(np.eye(Na), o_l.shape[:2] + (Na, Na)))
    last = o_l[..., L:L + An]                                                     # (steps + 1, B, N, A)
    want = np.eye(An)[np.concatenate([np.zeros((1, Bn, Na), int), acts])] * ~starts[..., None, None]
    np.testing.assert_array_equal(last, want)
    assert (last[starts] == 0).all() and (last[~starts].sum(-1) == 1).all()  # zero exactly at episode starts
    # the global state: unchanged, then every agent's previous action in agent order
    S = plain.state_size
    assert in_state.state_size == S + Na * An and with_last.state_size == S
    np.testing.assert_allclose(s_s[..., :S], s_p, atol=1e-5)
    np.testing.assert_array_equal(s_s[..., S:], want.reshape(want.shape[:2] + (Na * An,)))


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agent_type", ["lstm", "rnn"])
def test_recurrent_agents_refuse_image_observations(agent_type):
    image = ImageGame()
    with pytest.raises(ConfigError, match=rf"AGENT_TYPE={agent_type}.*shape \(4, 4, 2\)"):
        vdn_ps.make_train({"AGENT_TYPE": agent_type, "TOTAL_TIMESTEPS": 1e4, "LEARNING_STARTS": 0}, image)
    with pytest.raises(ConfigError, match=rf"AGENT_TYPE={agent_type}"):
        resolve_config({"AGENT_TYPE": agent_type}, SPECS["pqn_ps"], image)
    # feed-forward agents see the image flattened
    assert resolve_config({"AGENT_TYPE": "ff", "NUM_ENVS": 4, "NUM_MINIBATCHES": 2}, SPECS["pqn_ps"],
                          image)["AGENT_TYPE"] == "ff"


def test_bad_agent_type_and_last_action_values_are_named():
    for spec in ("qmix_ps", "pqn_ns"):
        with pytest.raises(ConfigError, match=r"AGENT_TYPE must be one of \['ff', 'rnn', 'lstm', 'cnn'\], got 'xyz'"):
            resolve_config({"AGENT_TYPE": "xyz"}, SPECS[spec])
        with pytest.raises(ConfigError, match="OBS_LAST_ACTION must be True or False"):
            resolve_config({"OBS_LAST_ACTION": "yes"}, SPECS[spec])
    assert resolve_config({}, SPECS["iql_ps"])["OBS_LAST_ACTION"] is False
