"""PQN for teams: online Q(λ) over many parallel envs, with no replay buffer and no target network
(Gallici et al. 2024, "Simplifying Deep Temporal Difference Learning"); MIXER vdn gives PQN-VDN.

Shape legend
    N  agents       Nt agents that learn (= N unless some are frozen pretrained agents)
    T  NUM_STEPS    B  NUM_ENVS     W  MEMORY_WINDOW    A  actions (padded)   D  obs size
    H  agent hidden size carried (0 for feed-forward agents, 2·AGENT_HIDDEN_DIM for LSTM ones: [c, h])
    S  samples of one rollout: T·B transitions (feed-forward agents) or B env sequences (GRU / LSTM agents)
    L  steps per sample: 1 (feed-forward) or W + T (GRU / LSTM)        M = S / NUM_MINIBATCHES

One update
 1. Rollout: B envs step T times; the agents that learn act ε-greedily on the online network (BatchNorm
    layers, if any, in evaluation mode), frozen pretrained agents greedily. The Q-values seen while acting
    are kept; the episode continues into the next rollout.
 2. Targets, computed once per rollout from those Q-values and the Q-values of the observation after it
    (Peng's Q(λ), :func:`purejaxql.rl_math.lambda_returns`):
        V_t = Σ_i max_{a ∈ avail_i} Q_i(o_{t+1,i}, a)      (MIXER none: each agent's own term, no sum)
        G_t = r_t + γ (1 - d_t) ((1 - λ) V_t + λ G_{t+1}),   G_{T-1} = r_{T-1} + γ (1 - d_{T-1}) V_{T-1}
    with r_t the team reward Σ_i r_{t,i} (MIXER none: each agent's reward), d_t the episode end.
 3. NUM_EPOCHS passes over the rollout, each in NUM_MINIBATCHES shuffled minibatches of M samples, one
    gradient step per minibatch on
        loss = mean_{t,b} (Σ_i Q_i(o_{t,i}, a_{t,i}) - G_t)²
    (BatchNorm in training mode). Feed-forward agents learn from shuffled transitions. GRU agents learn from
    whole env sequences, unrolled from the hidden state they acted with; the last W steps of the previous
    rollout are replayed first as context (they warm up the hidden state and are not in the loss).
Layer normalisation (NORM_TYPE) keeps bootstrapping from the online network stable without a target copy.
Episodes ended by the time limit (env.max_steps): with TIMEOUT_AS_TERMINAL (as JaxMARL's PQN) they are
terminal like any other end. Otherwise the true next observation of that last step is lost in the env's
auto-reset, so the step is left out of the loss and the step before it bootstraps on V alone (λ_t = 0),
so no target depends on the lost observation.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxql.config import RECURRENT_AGENT_TYPES
from purejaxql.environments import EnvCarry, reset_envs, step_envs
from purejaxql.loop import (Program, act, build, episode_stats, initial_metrics, record, shaping_metrics,
                            shaping_weight)
from purejaxql.rl_math import lambda_returns, linear_schedule, masked_mean


class TrainState(NamedTuple):
    params: Any          # {"agent": network variables: "params" (+ "batch_stats" with BatchNorm)}
    opt_state: Any       # optimiser state of params["agent"]["params"]
    n_updates: jax.Array
    grad_steps: jax.Array
    timesteps: jax.Array


class Context(NamedTuple):
    """Recurrent (GRU / LSTM) agents: the last W steps of the previous rollout, replayed before the next one."""
    obs: jax.Array       # (W, B, Nt, D)
    first: jax.Array     # (W, B)
    hidden: jax.Array    # (B, Nt, H) hidden state before obs[0] (before the next rollout when W = 0)


class RunnerState(NamedTuple):
    train: TrainState
    env: EnvCarry
    context: Context
    last: Dict[str, jax.Array]  # latest episode / evaluation metrics, carried between updates
    rng: jax.Array
    test_rng: jax.Array         # evaluation at update u uses fold_in(test_rng, u)


class Steps(NamedTuple):
    """One rollout, time-major (T, B, ...); Nt: the agents that learn."""
    obs: jax.Array           # (T, B, Nt, D)
    first: jax.Array         # (T, B) obs[t] starts an episode
    avail: jax.Array         # (T, B, Nt, A)
    q: jax.Array             # (T, B, Nt, A) Q-values the agents acted on
    actions: jax.Array       # (T, B, Nt)
    rewards: jax.Array       # (T, B, Nt) what the loss learns from (with REW_SHAPING_HORIZON: + weight × shaped)
    done: jax.Array          # (T, B) the episode ended with actions[t]
    timeout: jax.Array       # (T, B) ... by the time limit
    agent_return: jax.Array  # (T, B, N) each agent's return so far (the finished episode's where done)
    won: jax.Array           # (T, B)
    shaped: jax.Array        # (T, B, Nt) the env's shaped reward, unweighted (zeros without REW_SHAPING_HORIZON)


class Samples(NamedTuple):
    """What one update learns from; minibatches are slices along the S axis."""
    obs: jax.Array       # (L, S, Nt, D)
    first: jax.Array     # (L, S)
    hidden: jax.Array    # (S, Nt, H)
    actions: jax.Array   # (L', S, Nt) actions of the last L' steps (the ones in the loss)
    targets: jax.Array   # (L', S) team targets, or (L', S, Nt) with MIXER none
    mask: jax.Array      # (L', S) 1 = in the loss


class Parts(NamedTuple):
    """The stages of one update (``Program.parts``), for tests and for hacking on the algorithm."""
    rollout: Callable       # (agent params, EnvCarry, ε, rng) -> (carry, Steps, hidden for the next context)
    targets: Callable       # (agent params, carry after the rollout, Steps) -> (Q(λ) targets, loss mask)
    samples: Callable       # (Steps, Context, targets, mask) -> Samples
    next_context: Callable  # (Context, Steps, hidden) -> Context
    learn: Callable         # (TrainState, Samples, rng) -> (TrainState, loss, mean Q)
    update: Callable        # (RunnerState, update index) -> (RunnerState, metrics)


def make_train(cfg: Dict[str, Any], env, agents_cls) -> Program:
    """The PQN training program on a JaxMARL ``env`` for the resolved config ``cfg``
    (purejaxql.config.resolve_config; the entry modules' ``make_train`` resolves it). ``agents_cls`` is the
    agent variant (shared, per-agent or with frozen pretrained agents), as in
    :func:`purejaxql.q_learning.make_train`."""
    setup = build(cfg, env, agents_cls)
    wrapped, agents, learner, of_trained = setup.env, setup.agents, setup.learner, setup.of_trained
    Nt, T, B, W = setup.num_trained, cfg["NUM_STEPS"], cfg["NUM_ENVS"], cfg["MEMORY_WINDOW"]
    recurrent, vdn = cfg["AGENT_TYPE"] in RECURRENT_AGENT_TYPES, cfg["MIXER"] == "vdn"
    log_agents = cfg["LOG_AGENTS_SEPARATELY"]
    n_mb = cfg["NUM_MINIBATCHES"]

    lr = (optax.linear_schedule(cfg["LR"], 1e-10, cfg["NUM_EPOCHS"] * n_mb * cfg["NUM_UPDATES"])
          if cfg["LR_LINEAR_DECAY"] else cfg["LR"])
    opt = optax.radam if cfg["OPTIMIZER"] == "radam" else optax.adam
    tx = optax.chain(optax.clip_by_global_norm(cfg["MAX_GRAD_NORM"]), opt(learning_rate=lr))

    def init(rng):
        test_rng = jax.random.fold_in(rng, 0x7E57)
        rng, k_agent, k_env = jax.random.split(rng, 3)
        variables = agents.init(k_agent)
        train = TrainState(params={"agent": variables}, opt_state=tx.init(variables["params"]),
                           n_updates=jnp.int32(0), grad_steps=jnp.int32(0), timesteps=jnp.int32(0))
        carry = reset_envs(wrapped, k_env, agents.initial_hidden(B))
        context = Context(obs=jnp.zeros((W, B, Nt, wrapped.obs_size)), first=jnp.ones((W, B), bool),
                          hidden=jnp.zeros((B, Nt, learner.hidden_dim)))
        return RunnerState(train, carry, context, initial_metrics(setup, log_agents), rng, test_rng)

    def rollout(params, carry: EnvCarry, epsilon, rng, shaping=None):
        """T steps of B envs -> (carry, Steps (T, B, ...), hidden before step T - W). ``shaping``: the weight of
        the env's shaped reward in the rewards learnt from (None: none)."""
        def step(c, xs):
            carry, h_ctx = c
            t, k = xs
            k_act, k_env = jax.random.split(k)
            if W:  # keep the hidden state the context will start from
                h_ctx = jnp.where(t == T - W, carry.hidden, h_ctx)
            hidden, q, actions = act(agents, params, carry, epsilon, k_act)   # q (B, N, A), actions (B, N)
            new, (rewards, done, agent_return, won, timeout, shaped) = step_envs(wrapped, k_env, carry, actions,
                                                                                hidden, shaping)
            out = Steps(obs=of_trained(carry.obs, 1), first=carry.first, avail=of_trained(carry.avail, 1),
                        q=of_trained(q, 1), actions=of_trained(actions, 1), rewards=of_trained(rewards, 1),
                        done=done, timeout=timeout, agent_return=agent_return, won=won,
                        shaped=of_trained(shaped, 1))
            return (new, h_ctx), out

        (carry, h_ctx), steps = jax.lax.scan(step, (carry, carry.hidden), (jnp.arange(T), jax.random.split(rng, T)))
        return carry, steps, (carry.hidden if W == 0 else h_ctx)

    def targets(params, carry: EnvCarry, steps):
        """Q(λ) targets (T, B) (MIXER none: (T, B, Nt)) from the acting Q-values, and the loss mask (T, B)."""
        _, q_end = agents.apply(params, carry.hidden, carry.obs[None], carry.first[None])   # (1, B, N, A)
        q_next = jnp.concatenate([steps.q[1:], of_trained(q_end, 2)])                      # (T, B, Nt, A)
        avail_next = jnp.concatenate([steps.avail[1:], of_trained(carry.avail, 1)[None]])
        v = jnp.max(jnp.where(avail_next > 0, q_next, -jnp.inf), axis=-1)                    # (T, B, Nt)
        r = steps.rewards * cfg["REW_SCALE"]                                               # (T, B, Nt)
        discount = cfg["GAMMA"] * (1.0 - steps.done.astype(jnp.float32))                   # (T, B)
        lam = jnp.full((T, B), cfg["LAMBDA"])
        mask = jnp.ones((T, B))
        if not cfg["TIMEOUT_AS_TERMINAL"]:  # see the module docstring
            mask = 1.0 - steps.timeout.astype(jnp.float32)
            lam = lam * jnp.concatenate([mask[1:], jnp.ones((1, B))])
        if vdn:
            r, v = r.sum(-1), v.sum(-1)
        else:
            discount, lam = (jnp.broadcast_to(x[..., None], r.shape) for x in (discount, lam))
        flat = [x.reshape(T, -1) for x in (r, discount, v, lam)]                             # (T, B[·Nt])
        g = jax.vmap(lambda_returns, in_axes=1, out_axes=1)(*flat)
        return jax.lax.stop_gradient(g.reshape(r.shape)), mask

    def samples(steps, context: Context, g, mask) -> Samples:
        if not recurrent:  # (T, B, ...) -> one-step samples (1, T·B, ...)
            flat = lambda x: x.reshape((1, T * B) + x.shape[2:])  # noqa: E731
            return Samples(obs=flat(steps.obs), first=jnp.ones((1, T * B), bool),
                           hidden=jnp.zeros((T * B, Nt, learner.hidden_dim)), actions=flat(steps.actions),
                           targets=flat(g), mask=flat(mask))
        return Samples(obs=jnp.concatenate([context.obs, steps.obs]),                 # (W+T, B, Nt, D)
                       first=jnp.concatenate([context.first, steps.first]), hidden=context.hidden,
                       actions=steps.actions, targets=g, mask=mask)

    def next_context(context: Context, steps, h_ctx) -> Context:
        """The last W steps of (context + rollout), and the hidden state before them."""
        if not recurrent:
            return context
        obs = jnp.concatenate([context.obs, steps.obs])[T:]
        first = jnp.concatenate([context.first, steps.first])[T:]
        return Context(obs=obs, first=first, hidden=of_trained(h_ctx, 1)[..., :learner.hidden_dim])

    def loss_fn(p, variables, mb: Samples):
        _, q, variables = learner.apply_train({**variables, "params": p}, mb.hidden, mb.obs, mb.first)
        q = q[-mb.actions.shape[0]:]                                                 # (L', M, Nt, A)
        chosen = jnp.take_along_axis(q, mb.actions[..., None], axis=-1)[..., 0]     # (L', M, Nt)
        predicted = chosen.sum(-1) if vdn else chosen
        return masked_mean((predicted - mb.targets) ** 2, mb.mask), (variables, chosen.mean())

    def learn(train: TrainState, data: Samples, rng):
        def minibatch(train, idx):
            mb = Samples(*[jnp.take(x, idx, axis=0 if name == "hidden" else 1)
                           for name, x in zip(Samples._fields, data)])
            variables = train.params["agent"]
            (loss, (variables, qvals)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                variables["params"], variables, mb)
            updates, opt_state = tx.update(grads, train.opt_state, variables["params"])
            variables = {**variables, "params": optax.apply_updates(variables["params"], updates)}
            return train._replace(params={"agent": variables}, opt_state=opt_state,
                                  grad_steps=train.grad_steps + 1), (loss, qvals)

        def epoch(train, k):
            S = data.first.shape[1]
            return jax.lax.scan(minibatch, train, jax.random.permutation(k, S).reshape(n_mb, S // n_mb))

        train, (loss, qvals) = jax.lax.scan(epoch, train, jax.random.split(rng, cfg["NUM_EPOCHS"]))
        return train, loss.mean(), qvals.mean()

    def update(runner: RunnerState, update_idx):
        """One update: rollout -> Q(λ) targets -> epochs of minibatch steps -> (maybe) evaluate."""
        train = runner.train
        rng, k_roll, k_learn = jax.random.split(runner.rng, 3)
        epsilon = linear_schedule(cfg["EPSILON_START"], cfg["EPSILON_FINISH"],
                                  cfg["EPSILON_ANNEAL_TIME"], train.timesteps)
        params = train.params["agent"]
        shaping = shaping_weight(cfg, train.timesteps)
        carry, steps, h_ctx = rollout(params, runner.env, epsilon, k_roll, shaping)
        g, mask = targets(params, carry, steps)
        train, loss, qvals = learn(train, samples(steps, runner.context, g, mask), k_learn)
        context = next_context(runner.context, steps, h_ctx)
        train = train._replace(n_updates=train.n_updates + 1, timesteps=train.timesteps + B * T)

        stats, n_done = episode_stats(setup, steps.agent_return, steps.done, steps.won, log_agents)
        last, metrics = record(cfg, setup, runner.last, stats, n_done, update_idx, runner.test_rng, train, loss,
                               qvals, epsilon, shaping_metrics(shaping, steps.shaped))
        return RunnerState(train, carry, context, last, rng, runner.test_rng), metrics

    return Program.of(setup, init, update, Parts(rollout=rollout, targets=targets, samples=samples,
                                                 next_context=next_context, learn=learn, update=update))
