"""Replay-based multi-agent Q-learning: the training loop shared by IQL, VDN, QMIX, QPLEX, OW-/CW-QMIX and
Qatten.

An algorithm (``iql.py``, ``vdn.py``, ``qmix.py``, ``qplex.py``, ``wqmix.py``, ``qatten.py``) is only its value
decomposition: a mixer ``(mixer_params, q (T, Bs, N), state (T, Bs, S), ctx) -> Q_tot`` and whether it learns
from the team reward or each agent's own (weighted QMIX adds central agents and its own loss, see
:class:`QAlgorithm`). An agent variant (``networks.SharedAgents``, ...) supplies how agent parameters are
initialised and applied. Everything else, acting, replay, the double-Q TD target, masks and loss, target
sync and evaluation, lives here once:

    δ_t = y_t - Mix(q_taken_t, s_t)      (double-Q TD errors: purejaxql.decomposition, with the formula)
    L = mean over steps not cut by a time limit of δ_t²
        (with PER=True each sequence's terms weighted by its importance weight, purejaxql.replay)

TD(λ) runs backwards over each sampled sequence of T steps (Peng's Q(λ) on the target network's double-Q
values, as pymarl2's QMIX): an episode end cuts it (d_t = 1), and with TIMEOUT_AS_TERMINAL=False a step whose
next step is a time-out takes λ_t = 0, so no target leans on a transition whose true next observation was
lost in the auto-reset (as in purejaxql.pqn). With REW_NORM=True, r_t is standardised by the running
moments of the rewards collected so far (carried in ``TrainState.reward_stats``).

Shape legend
    N agents            T  NUM_STEPS (steps per env per update)     B  NUM_ENVS
    Bs BUFFER_BATCH_SIZE A  actions (padded)     D  obs size (padded + agent id)
    S  global state size H  agent carry size (GRU: its width, LSTM: 2 x width for [c, h], 0 for feed-forward)
    Nt agents that learn (= N, unless some are frozen pretrained agents; replay and loss hold only them)

Replay layout. Each update stores, per env, one *chunk* of T consecutive steps plus the agent hidden
state that preceded it. Chunks are the items of a flashbax trajectory buffer (time axis = chunk
index per env), so every observation is stored once. A learning sample is a pair of consecutive
chunks of one env: the T steps of the first plus the first observation of the second give the T+1
observations needed for T TD targets, so no step loses its bootstrap and episodes run across update
boundaries. The learner starts its unroll from the stored hidden state ("stored state", as in R2D2)
and resets the GRU / LSTM state wherever ``first[t]`` marks an episode start, exactly as the actor did.
With PER=True the buffer is flashbax's prioritised one (purejaxql.replay): same items, drawn by priority.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxql.decomposition import Mixer, QAlgorithm, Team, Transitions, standard_loss
from purejaxql.environments import EnvCarry, reset_envs, step_envs
from purejaxql.loop import (Program, act, build, episode_stats, initial_metrics, record, shaping_metrics,
                            shaping_weight)
from purejaxql.replay import (RewardStats, make_replay, sequence_priorities, standardise,
                              update_reward_stats)
from purejaxql.rl_math import linear_schedule, masked_mean


class Chunk(NamedTuple):
    """One env's T steps, one replay item (leading axes (B,) when added, (Bs, 2) when sampled)."""
    obs: jax.Array      # (T, Nt, D)
    state: jax.Array    # (T, S) global state (S = 0 when the algorithm does not use it)
    first: jax.Array    # (T,)  obs[t] starts an episode
    avail: jax.Array    # (T, Nt, A)
    actions: jax.Array  # (T, Nt)
    rewards: jax.Array  # (T, Nt) per-agent rewards
    dones: jax.Array    # (T,)  the episode ended with actions[t]
    timeout: jax.Array  # (T,)  ... by reaching env.max_steps (a time limit, not a terminal state)
    hidden: jax.Array   # (Nt, H) hidden state before obs[0]


class TrainState(NamedTuple):
    params: Any          # {"agent": ..., "mixer": ...}
    target_params: Any
    opt_state: Any
    n_updates: jax.Array
    grad_steps: jax.Array
    timesteps: jax.Array
    reward_stats: Any = None    # RewardStats of the rewards the loss learns from (REW_NORM), else None


class RunnerState(NamedTuple):
    train: TrainState
    buffer: Any
    env: EnvCarry
    last: Dict[str, jax.Array]  # latest episode / evaluation metrics, carried between updates
    rng: jax.Array
    test_rng: jax.Array         # evaluation at update u uses fold_in(test_rng, u) (reproducible later)


class Parts(NamedTuple):
    """The stages of one update (``Program.parts``), for tests and for hacking on the algorithm."""
    rollout: Callable     # (agent params, EnvCarry, ε, rng, shaping weight | None) -> (carry, chunk (B, ...),
                          #   stats, n_done, shaped reward (T, B, Nt))
    sequences: Callable   # sampled chunk pairs (Bs, 2, ...) -> time-major sequences (T+1, Bs, ...)
    loss: Callable        # (params, target params, sequences, importance weights | None, RewardStats | None)
                          #   -> (loss, (mean Q of the taken actions, sequence priorities (Bs,)))
    learn_step: Callable  # (TrainState, sequences, importance weights | None) -> (TrainState, (loss, mean Q), priorities)
    learn: Callable       # (TrainState, buffer state, rng) -> (TrainState, priorities (Replay.priorities_of), loss,
                          #   mean Q): NUM_EPOCHS steps
    update: Callable      # (RunnerState, update index) -> (RunnerState, metrics)
    replay: Any           # purejaxql.replay.Replay: the flashbax buffer, uniform or prioritised
    tx: Any               # the optax optimiser
    mixer: Mixer


def make_train(cfg: Dict[str, Any], env, algorithm: QAlgorithm, agents_cls) -> Program:
    """The training program of ``algorithm`` on a JaxMARL ``env`` for the resolved config ``cfg``
    (purejaxql.config.resolve_config; the entry modules' ``make_train`` resolves it).

    ``agents_cls`` is the agent variant: :class:`~purejaxql.networks.SharedAgents` (``_ps``),
    :class:`~purejaxql.networks.SeparateAgents` (``_ns``) or frozen pretrained agents beside shared ones
    (:func:`purejaxql.pretrained.pretrained_variant`); nothing else differs between them.
    """
    setup = build(cfg, env, agents_cls)
    wrapped, agents, learner, of_trained = setup.env, setup.agents, setup.learner, setup.of_trained
    Nt, A, T, B = setup.num_trained, wrapped.max_action_space, cfg["NUM_STEPS"], cfg["NUM_ENVS"]
    S = wrapped.state_size if algorithm.uses_state else 0
    Ht = learner.hidden_dim
    mixer = algorithm.make_mixer(cfg, Team(Nt, wrapped.state_size, A, wrapped.obs_size))
    algorithm_loss = (algorithm.make_loss or (lambda cfg, mixer: standard_loss(algorithm, mixer)))(cfg, mixer)

    learn_updates = cfg["NUM_UPDATES"] - cfg["FIRST_LEARN_UPDATE"]
    lr = (optax.linear_schedule(cfg["LR"], 1e-10, cfg["NUM_EPOCHS"] * learn_updates)
          if cfg["LR_LINEAR_DECAY"] else cfg["LR"])
    opt = optax.radam if cfg["OPTIMIZER"] == "radam" else optax.adam
    tx = optax.chain(optax.clip_by_global_norm(cfg["MAX_GRAD_NORM"]), opt(learning_rate=lr))

    replay = make_replay(cfg, B)
    buffer = replay.buffer
    stats_size = Nt if not algorithm.team_reward else 1  # REW_NORM: one running mean per learnt reward
    log_agents = cfg["LOG_AGENTS_SEPARATELY"]
    steps_per_update = B * T

    def init(rng):
        test_rng = jax.random.fold_in(rng, 0x7E57)
        rng, k_agent, k_mixer, k_env = jax.random.split(rng, 4)
        params = {"agent": agents.init(k_agent), "mixer": mixer.init(k_mixer)}
        if algorithm.central_agents:
            params["central_agent"] = agents.init(jax.random.fold_in(k_agent, 1))
        reward_stats = None
        if cfg["REW_NORM"]:
            reward_stats = RewardStats(jnp.zeros(stats_size), jnp.ones(stats_size), jnp.float32(1e-4))
        train = TrainState(params=params, target_params=params, opt_state=tx.init(params),
                           n_updates=jnp.int32(0), grad_steps=jnp.int32(0), timesteps=jnp.int32(0),
                           reward_stats=reward_stats)
        carry = reset_envs(wrapped, k_env, agents.initial_hidden(B))
        dummy = Chunk(obs=jnp.zeros((T, Nt, wrapped.obs_size)), state=jnp.zeros((T, S)),
                      first=jnp.zeros((T,), bool), avail=jnp.zeros((T, Nt, A)),
                      actions=jnp.zeros((T, Nt), jnp.int32), rewards=jnp.zeros((T, Nt)),
                      dones=jnp.zeros((T,), bool), timeout=jnp.zeros((T,), bool),
                      hidden=jnp.zeros((Nt, Ht)))
        last = initial_metrics(setup, log_agents)
        return RunnerState(train, buffer.init(dummy), carry, last, rng, test_rng)

    def rollout(params, carry: EnvCarry, epsilon, rng, shaping=None):
        """T ε-greedy steps of B envs -> (carry, chunk (B, ...), episode stats, episodes ended, shaped reward
        (T, B, Nt)). ``shaping``: the weight of the env's shaped reward in the stored rewards (None: none)."""
        def step(carry, k):
            k_act, k_env = jax.random.split(k)
            hidden, _, actions = act(agents, params, carry, epsilon, k_act)  # actions (B, N)
            new, (rewards, done, agent_return, won, timeout, shaped) = step_envs(wrapped, k_env, carry, actions,
                                                                                hidden, shaping)
            out = (of_trained(carry.obs, 1), carry.state[:, :S], carry.first, of_trained(carry.avail, 1),
                   of_trained(actions, 1), of_trained(rewards, 1), done, timeout)
            return new, (out, agent_return, won, of_trained(shaped, 1))

        h0 = of_trained(carry.hidden, 1)[..., :Ht]
        carry, (out, agent_return, won, shaped) = jax.lax.scan(step, carry, jax.random.split(rng, T))
        steps = Chunk(*out, hidden=h0)                       # fields (T, B, ...), hidden (B, Nt, Ht)
        chunk = steps._replace(**{f: jnp.swapaxes(getattr(steps, f), 0, 1)
                                  for f in Chunk._fields if f != "hidden"})  # (B, T, ...)
        stats, n_done = episode_stats(setup, agent_return, steps.dones, won, log_agents)
        return carry, chunk, stats, n_done, shaped

    def sequences(sample: Chunk) -> Chunk:
        """(Bs, 2, ...) pairs of consecutive chunks -> time-major sequences of T+1 steps (T for
        actions/rewards/dones): (T+1, Bs, ...)."""
        def join(x):
            return jnp.swapaxes(jnp.concatenate([x[:, 0], x[:, 1, :1]], axis=1), 0, 1)

        def head(x):
            return jnp.swapaxes(x[:, 0], 0, 1)
        return Chunk(obs=join(sample.obs), state=join(sample.state), first=join(sample.first),
                     avail=join(sample.avail), actions=head(sample.actions),
                     rewards=head(sample.rewards), dones=head(sample.dones), timeout=head(sample.timeout),
                     hidden=sample.hidden[:, 0])

    def transitions(params, target_params, seq: Chunk, reward_stats=None) -> Transitions:
        """Unroll the agents (and the central ones, if any) over sampled sequences (T+1, Bs, ...)."""
        def unroll(p):
            return learner.apply(p, seq.hidden, seq.obs, seq.first)[1]                  # (T+1, Bs, Nt, A)

        def online(p):
            if learner.network.recurrent:
                return unroll(p)
            # feed-forward agents see each step apart: the last step's values only pick the double-Q action, so
            # it runs without gradient and its backward pass is left out (half the learner's backward at T = 1)
            q = learner.apply(p, seq.hidden, seq.obs[:-1], seq.first[:-1])[1]            # (T, Bs, Nt, A)
            last = learner.apply(jax.lax.stop_gradient(p), seq.hidden, seq.obs[-1:], seq.first[-1:])[1]
            return jnp.concatenate([q, last])                                           # (T+1, Bs, Nt, A)

        def target_next(p):   # the target agents' values at t+1 only: (T, Bs, Nt, A)
            if learner.network.recurrent:
                return unroll(p)[1:]
            return learner.apply(p, seq.hidden, seq.obs[1:], seq.first[1:])[1]
        central = {}
        if algorithm.central_agents:
            central = dict(central_q=unroll(params["central_agent"]),
                           central_q_target=unroll(target_params["central_agent"]))
        discount = cfg["GAMMA"] * (1.0 - seq.dones.astype(jnp.float32))                # (T, Bs)
        lambda_t = None
        if cfg["TD_LAMBDA"] > 0:
            lambda_t = jnp.full(discount.shape, cfg["TD_LAMBDA"])                           # (T, Bs)
            if not cfg["TIMEOUT_AS_TERMINAL"]:  # a step before a time-out must not lean on it (module docstring)
                lambda_t = lambda_t * jnp.concatenate([1.0 - seq.timeout[1:], jnp.ones_like(lambda_t[:1])])
        rewards = seq.rewards                                                           # (T, Bs, Nt)
        if reward_stats is not None:  # REW_NORM: standardised in the loss only
            rewards = standardise(reward_stats, rewards, algorithm.team_reward)
        return Transitions(q=online(params["agent"]), q_next_target=target_next(target_params["agent"]),
                           actions=seq.actions,
                           avail=seq.avail, obs=seq.obs, state=seq.state, rewards=rewards * cfg["REW_SCALE"],
                           discount=discount, lambda_t=lambda_t, **central)

    def loss_fn(params, target_params, seq: Chunk, is_weights=None, reward_stats=None):
        x = transitions(params, target_params, seq, reward_stats)
        squared, delta = algorithm_loss(params, target_params, x)                      # (T, Bs[, Nt])
        # A time-out's true next observation is lost in the env's auto-reset: with
        # TIMEOUT_AS_TERMINAL=False such transitions are left out of the loss instead of being
        # treated as terminal (the rest bootstrap as usual).
        mask = None if cfg["TIMEOUT_AS_TERMINAL"] else 1.0 - seq.timeout.astype(jnp.float32)  # (T, Bs)
        loss = masked_mean(squared, mask)
        if is_weights is not None:  # PER: each sequence's terms weighted, normalised as the plain mean
            ones = jnp.ones(squared.shape[:2]) if mask is None else mask
            loss = masked_mean(squared * is_weights.reshape((1, -1) + (1,) * (squared.ndim - 2)), ones)
        q_taken = jnp.take_along_axis(x.q[:-1], x.actions[..., None], axis=-1)
        priorities = sequence_priorities(jax.lax.stop_gradient(delta), mask, cfg["PER_ETA"])  # (Bs,)
        return loss, (q_taken.mean(), priorities)

    def learn_step(train: TrainState, seq: Chunk, is_weights=None):
        """One gradient step on sequences (T+1, Bs, ...) -> (train, (loss, mean Q of the taken actions),
        the sequences' new priorities (Bs,))."""
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (qvals, priorities)), grads = grad_fn(train.params, train.target_params, seq, is_weights,
                                                     train.reward_stats)
        updates, opt_state = tx.update(grads, train.opt_state, train.params)
        train = train._replace(params=optax.apply_updates(train.params, updates), opt_state=opt_state,
                               grad_steps=train.grad_steps + 1)
        return train, (loss, qvals), priorities

    def learn(train: TrainState, buffer_state, rng):
        """NUM_EPOCHS gradient steps, each on a fresh sample; with PER the sampled items' priorities are
        rewritten after each step. -> (train, the buffer's priorities (replay.priorities_of), mean loss, mean Q)."""
        beta = linear_schedule(cfg["PER_BETA"], 1.0, cfg["TOTAL_TIMESTEPS"], train.timesteps)

        def epoch(carry, k):
            train, tree = carry
            state = replay.with_priorities(buffer_state, tree)
            items, indices, is_weights = replay.sample(state, k, beta)
            train, metrics, priorities = learn_step(train, sequences(items), is_weights)
            return (train, replay.priorities_of(replay.set_priorities(state, indices, priorities))), metrics
        (train, tree), (loss, qvals) = jax.lax.scan(epoch, (train, replay.priorities_of(buffer_state)),
                                                    jax.random.split(rng, cfg["NUM_EPOCHS"]))
        return train, tree, loss.mean(), qvals.mean()

    def update(runner: RunnerState, update_idx):
        """One update: rollout -> store -> learn -> target sync -> (maybe) evaluate.
        ``update_idx`` comes from the scan's xs, so conditions on it stay real branches under vmap."""
        train = runner.train
        rng, k_roll, k_learn, _ = jax.random.split(runner.rng, 4)
        epsilon = linear_schedule(cfg["EPSILON_START"], cfg["EPSILON_FINISH"],
                                  cfg["EPSILON_ANNEAL_TIME"], train.timesteps)
        shaping = shaping_weight(cfg, train.timesteps)
        carry, chunk, stats, n_done, shaped = rollout(train.params["agent"], runner.env, epsilon, k_roll, shaping)
        buffer_state = buffer.add(runner.buffer, jax.tree.map(lambda x: x[:, None], chunk))
        train = train._replace(timesteps=train.timesteps + steps_per_update)
        if cfg["REW_NORM"]:
            learnt = chunk.rewards.sum(-1, keepdims=True) if algorithm.team_reward else chunk.rewards  # (B, T, K)
            train = train._replace(reward_stats=update_reward_stats(train.reward_stats, learnt))

        can_learn = update_idx >= cfg["FIRST_LEARN_UPDATE"]  # >= 2 chunks stored, past LEARNING_STARTS
        train, tree, loss, qvals = jax.lax.cond(
            can_learn, lambda t, _: learn(t, buffer_state, k_learn),
            lambda t, tree: (t, tree, jnp.float32(jnp.nan), jnp.float32(jnp.nan)), train,
            replay.priorities_of(buffer_state))
        buffer_state = replay.with_priorities(buffer_state, tree)
        train = train._replace(n_updates=train.n_updates + 1)
        train = jax.lax.cond(
            (update_idx + 1) % cfg["TARGET_UPDATE_INTERVAL"] == 0,
            lambda t: t._replace(target_params=optax.incremental_update(
                t.params, t.target_params, cfg["TAU"])),
            lambda t: t, train)

        last, metrics = record(cfg, setup, runner.last, stats, n_done, update_idx, runner.test_rng, train, loss,
                               qvals, epsilon, shaping_metrics(shaping, shaped))
        return RunnerState(train, buffer_state, carry, last, rng, runner.test_rng), metrics

    return Program.of(setup, init, update, Parts(rollout=rollout, sequences=sequences, loss=loss_fn,
                                                 learn_step=learn_step, learn=learn, update=update, replay=replay,
                                                 tx=tx, mixer=mixer))
