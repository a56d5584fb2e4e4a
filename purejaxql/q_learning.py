"""Replay-based multi-agent Q-learning: the training loop shared by IQL, VDN and QMIX.

An algorithm (``iql.py``, ``vdn.py``, ``qmix.py``) is only its value decomposition: a mixer
``(mixer_params, q (T, Bs, N), state (T, Bs, S)) -> Q_tot`` and whether it learns from the team reward or
each agent's own. An agent variant (``networks.SharedAgents``, ...) supplies how agent parameters are
initialised and applied. Everything else, acting, replay, the double-Q TD target, masks and loss, target
sync and evaluation, lives here once:

    q_taken_t = Q_i(o_t, a_t),    q_next_t = Q̄_i(o_{t+1}, argmax_{a ∈ avail} Q_i(o_{t+1}, a))   (double Q)
    V_t = Mix̄(q_next_t, s_{t+1})                         r_t: team reward Σ_i r_{t,i}, or each agent's own
    y_t = r_t + γ (1 - d_t) V_t                                         (TD_LAMBDA = 0: 1-step targets)
    y_t = r_t + γ (1 - d_t) ((1 - λ_t) V_t + λ_t y_{t+1}),  y_{T-1} = r_{T-1} + γ (1 - d_{T-1}) V_{T-1}  (TD(λ))
    L = mean over steps not cut by a time limit of (y_t - Mix(q_taken_t, s_t))²

with Q̄ / Mix̄ the target network's agents / mixer and d_t the end of an episode.
TD(λ) runs backwards over each sampled sequence of T steps (Peng's Q(λ) on the target network's double-Q
values, as pymarl2's QMIX): an episode end cuts it (d_t = 1), and with TIMEOUT_AS_TERMINAL=False a step whose
next step is a time-out takes λ_t = 0, so no target leans on a transition whose true next observation was
lost in the auto-reset (as in purejaxql.pqn).

Shape legend
    N agents            T  NUM_STEPS (steps per env per update)     B  NUM_ENVS
    Bs BUFFER_BATCH_SIZE A  actions (padded)     D  obs size (padded + agent id)
    S  global state size H  agent hidden size (0 for feed-forward agents)
    Nt agents that learn (= N, unless some are frozen pretrained agents; replay and loss hold only them)

Replay layout. Each update stores, per env, one *chunk* of T consecutive steps plus the agent hidden
state that preceded it. Chunks are the items of a flashbax trajectory buffer (time axis = chunk
index per env), so every observation is stored once. A learning sample is a pair of consecutive
chunks of one env: the T steps of the first plus the first observation of the second give the T+1
observations needed for T TD targets, so no step loses its bootstrap and episodes run across update
boundaries. The learner starts its unroll from the stored hidden state ("stored state", as in R2D2)
and resets the GRU wherever ``first[t]`` marks an episode start, exactly as the actor did.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple

import chex
import flashbax as fbx
import jax
import jax.numpy as jnp
import optax

from purejaxql.environments import EnvCarry, reset_envs, step_envs
from purejaxql.loop import Program, act, build, episode_stats, initial_metrics, record
from purejaxql.rl_math import double_q_bootstrap, lambda_returns, linear_schedule, masked_mean


class Mixer(NamedTuple):
    """A value decomposition's mixer, for N agents and global states of size S."""
    init: Callable[[jax.Array], Any]                    # rng -> mixer params ({} when it has none)
    apply: Callable[[Any, jax.Array, jax.Array], jax.Array]
    # (params, q (..., N), state (..., S)) -> Q_tot (...) for a team value, (..., N) for independent ones


@dataclass(frozen=True)
class QAlgorithm:
    """What distinguishes IQL, VDN and QMIX: ``make_mixer(cfg, N, S)``, whether the mixed value learns
    from the team reward Σ_i r_i (``team_reward``; else Q_tot keeps the agent axis and each agent learns
    from its own reward) and whether the mixer reads the global state (``uses_state``; replay stores it
    only then)."""
    name: str
    make_mixer: Callable[[Dict[str, Any], int, int], Mixer]
    team_reward: bool = True
    uses_state: bool = False


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


class RunnerState(NamedTuple):
    train: TrainState
    buffer: Any
    env: EnvCarry
    last: Dict[str, jax.Array]  # latest episode / evaluation metrics, carried between updates
    rng: jax.Array
    test_rng: jax.Array         # evaluation at update u uses fold_in(test_rng, u) (reproducible later)


class Parts(NamedTuple):
    """The stages of one update (``Program.parts``), for tests and for hacking on the algorithm."""
    rollout: Callable     # (agent params, EnvCarry, ε, rng) -> (carry, chunk (B, ...), stats, n_done)
    sequences: Callable   # sampled chunk pairs (Bs, 2, ...) -> time-major sequences (T+1, Bs, ...)
    loss: Callable        # (params, target params, sequences) -> (loss, mean Q of the taken actions)
    learn_step: Callable  # (TrainState, sequences) -> (TrainState, (loss, mean Q))
    learn: Callable       # (TrainState, buffer state, rng) -> (TrainState, loss, mean Q): NUM_EPOCHS steps
    update: Callable      # (RunnerState, update index) -> (RunnerState, metrics)
    buffer: Any           # the flashbax trajectory buffer
    tx: Any               # the optax optimiser
    mixer: Mixer


def td_loss(team_reward: bool, mix: Callable, mixer_params, target_mixer_params, q_taken: jax.Array,
            q_next: jax.Array, rewards: jax.Array, discount: jax.Array, state: jax.Array, mask=None,
            lambda_t=None) -> jax.Array:
    """The loss of every replay algorithm (see the module docstring): q_taken, q_next (double-Q bootstrap
    values), rewards (T, Bs, N); discount, mask, lambda_t (T, Bs) (mask None: every step; lambda_t None:
    1-step targets, else TD(λ) with λ_t per step); state (T+1, Bs, S). ``mix`` is the algorithm's
    ``Mixer.apply``, with the online mixer's parameters on q_taken and the target mixer's on q_next; with
    ``team_reward`` the mixed value learns from Σ_i r_i, otherwise (IQL) each agent's value from its own
    reward."""
    chex.assert_equal_shape([q_taken, q_next, rewards])
    chex.assert_equal_shape([discount, q_taken[..., 0]])
    if team_reward:  # one value for the team: Q_tot (T, Bs)
        rewards = rewards.sum(-1)
    else:            # independent values: Q_tot (T, Bs, N), one TD error per agent
        discount = discount[..., None]
        lambda_t = None if lambda_t is None else lambda_t[..., None]
    q_tot = mix(mixer_params, q_taken, state[:-1])
    v = mix(target_mixer_params, q_next, state[1:])
    if lambda_t is None:
        target = rewards + discount * v
    else:  # λ-returns backwards along time, one column per sequence (and agent)
        columns = [jnp.broadcast_to(x, v.shape).reshape(v.shape[0], -1) for x in (rewards, discount, v, lambda_t)]
        target = jax.vmap(lambda_returns, in_axes=1, out_axes=1)(*columns).reshape(v.shape)
    return masked_mean((jax.lax.stop_gradient(target) - q_tot) ** 2, mask)


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
    mixer = algorithm.make_mixer(cfg, Nt, wrapped.state_size)

    learn_updates = cfg["NUM_UPDATES"] - cfg["FIRST_LEARN_UPDATE"]
    lr = (optax.linear_schedule(cfg["LR"], 1e-10, cfg["NUM_EPOCHS"] * learn_updates)
          if cfg["LR_LINEAR_DECAY"] else cfg["LR"])
    opt = optax.radam if cfg["OPTIMIZER"] == "radam" else optax.adam
    tx = optax.chain(optax.clip_by_global_norm(cfg["MAX_GRAD_NORM"]), opt(learning_rate=lr))

    buffer = fbx.make_trajectory_buffer(
        add_batch_size=B, sample_batch_size=cfg["BUFFER_BATCH_SIZE"], sample_sequence_length=2,
        period=1, min_length_time_axis=2, max_length_time_axis=cfg["BUFFER_SIZE"] // B)
    log_agents = cfg["LOG_AGENTS_SEPARATELY"]
    steps_per_update = B * T

    def init(rng):
        test_rng = jax.random.fold_in(rng, 0x7E57)
        rng, k_agent, k_mixer, k_env = jax.random.split(rng, 4)
        params = {"agent": agents.init(k_agent), "mixer": mixer.init(k_mixer)}
        train = TrainState(params=params, target_params=params, opt_state=tx.init(params),
                           n_updates=jnp.int32(0), grad_steps=jnp.int32(0), timesteps=jnp.int32(0))
        carry = reset_envs(wrapped, k_env, agents.initial_hidden(B))
        dummy = Chunk(obs=jnp.zeros((T, Nt, wrapped.obs_size)), state=jnp.zeros((T, S)),
                      first=jnp.zeros((T,), bool), avail=jnp.zeros((T, Nt, A)),
                      actions=jnp.zeros((T, Nt), jnp.int32), rewards=jnp.zeros((T, Nt)),
                      dones=jnp.zeros((T,), bool), timeout=jnp.zeros((T,), bool),
                      hidden=jnp.zeros((Nt, Ht)))
        last = initial_metrics(setup, log_agents)
        return RunnerState(train, buffer.init(dummy), carry, last, rng, test_rng)

    def rollout(params, carry: EnvCarry, epsilon, rng):
        """T ε-greedy steps of B envs -> (carry, chunk (B, ...), episode stats)."""
        def step(carry, k):
            k_act, k_env = jax.random.split(k)
            hidden, _, actions = act(agents, params, carry, epsilon, k_act)  # actions (B, N)
            new, (rewards, done, agent_return, won, timeout) = step_envs(wrapped, k_env, carry, actions,
                                                                        hidden)
            out = (of_trained(carry.obs, 1), carry.state[:, :S], carry.first, of_trained(carry.avail, 1),
                   of_trained(actions, 1), of_trained(rewards, 1), done, timeout)
            return new, (out, agent_return, won)

        h0 = of_trained(carry.hidden, 1)[..., :Ht]
        carry, (out, agent_return, won) = jax.lax.scan(step, carry, jax.random.split(rng, T))
        steps = Chunk(*out, hidden=h0)                       # fields (T, B, ...), hidden (B, Nt, Ht)
        chunk = steps._replace(**{f: jnp.swapaxes(getattr(steps, f), 0, 1)
                                  for f in Chunk._fields if f != "hidden"})  # (B, T, ...)
        stats, n_done = episode_stats(setup, agent_return, steps.dones, won, log_agents)
        return carry, chunk, stats, n_done

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

    def loss_fn(params, target_params, seq: Chunk):
        _, q = learner.apply(params["agent"], seq.hidden, seq.obs, seq.first)         # (T+1, Bs, Nt, A)
        _, q_tgt = learner.apply(target_params["agent"], seq.hidden, seq.obs, seq.first)
        q_taken = jnp.take_along_axis(q[:-1], seq.actions[..., None], axis=-1)[..., 0]  # (T, Bs, Nt)
        bootstrap = jax.vmap(jax.vmap(jax.vmap(double_q_bootstrap)))
        q_next = bootstrap(jax.lax.stop_gradient(q_tgt[1:]), jax.lax.stop_gradient(q[1:]),
                           seq.avail[1:])                                               # (T, Bs, Nt)
        discount = cfg["GAMMA"] * (1.0 - seq.dones.astype(jnp.float32))                # (T, Bs)
        # A time-out's true next observation is lost in the env's auto-reset: with
        # TIMEOUT_AS_TERMINAL=False such transitions are left out of the loss instead of being
        # treated as terminal (the rest bootstrap as usual).
        mask = None if cfg["TIMEOUT_AS_TERMINAL"] else 1.0 - seq.timeout.astype(jnp.float32)  # (T, Bs)
        lambda_t = None
        if cfg["TD_LAMBDA"] > 0:
            lambda_t = jnp.full(discount.shape, cfg["TD_LAMBDA"])                           # (T, Bs)
            if mask is not None:  # a step before a time-out must not lean on it (see the module docstring)
                lambda_t = lambda_t * jnp.concatenate([mask[1:], jnp.ones_like(mask[:1])])
        loss = td_loss(algorithm.team_reward, mixer.apply, params["mixer"], target_params["mixer"], q_taken, q_next,
                       seq.rewards * cfg["REW_SCALE"], discount, seq.state, mask, lambda_t)
        return loss, q_taken.mean()

    def learn_step(train: TrainState, seq: Chunk):
        """One gradient step on sequences (T+1, Bs, ...) -> (train, (loss, mean Q of the taken actions))."""
        (loss, qvals), grads = jax.value_and_grad(loss_fn, has_aux=True)(train.params, train.target_params, seq)
        updates, opt_state = tx.update(grads, train.opt_state, train.params)
        train = train._replace(params=optax.apply_updates(train.params, updates), opt_state=opt_state,
                               grad_steps=train.grad_steps + 1)
        return train, (loss, qvals)

    def learn(train: TrainState, buffer_state, rng):
        def epoch(train, k):
            return learn_step(train, sequences(buffer.sample(buffer_state, k).experience))
        train, (loss, qvals) = jax.lax.scan(epoch, train, jax.random.split(rng, cfg["NUM_EPOCHS"]))
        return train, loss.mean(), qvals.mean()

    def update(runner: RunnerState, update_idx):
        """One update: rollout -> store -> learn -> target sync -> (maybe) evaluate.
        ``update_idx`` comes from the scan's xs, so conditions on it stay real branches under vmap."""
        train = runner.train
        rng, k_roll, k_learn, _ = jax.random.split(runner.rng, 4)
        epsilon = linear_schedule(cfg["EPSILON_START"], cfg["EPSILON_FINISH"],
                                  cfg["EPSILON_ANNEAL_TIME"], train.timesteps)
        carry, chunk, stats, n_done = rollout(train.params["agent"], runner.env, epsilon, k_roll)
        buffer_state = buffer.add(runner.buffer, jax.tree.map(lambda x: x[:, None], chunk))
        train = train._replace(timesteps=train.timesteps + steps_per_update)

        can_learn = update_idx >= cfg["FIRST_LEARN_UPDATE"]  # >= 2 chunks stored, past LEARNING_STARTS
        train, loss, qvals = jax.lax.cond(
            can_learn, lambda t: learn(t, buffer_state, k_learn),
            lambda t: (t, jnp.float32(jnp.nan), jnp.float32(jnp.nan)), train)
        train = train._replace(n_updates=train.n_updates + 1)
        train = jax.lax.cond(
            (update_idx + 1) % cfg["TARGET_UPDATE_INTERVAL"] == 0,
            lambda t: t._replace(target_params=optax.incremental_update(
                t.params, t.target_params, cfg["TAU"])),
            lambda t: t, train)

        last, metrics = record(cfg, setup, runner.last, stats, n_done, update_idx, runner.test_rng, train, loss,
                               qvals, epsilon)
        return RunnerState(train, buffer_state, carry, last, rng, runner.test_rng), metrics

    return Program.of(setup, init, update, Parts(rollout=rollout, sequences=sequences, loss=loss_fn,
                                                 learn_step=learn_step, learn=learn, update=update, buffer=buffer,
                                                 tx=tx, mixer=mixer))
