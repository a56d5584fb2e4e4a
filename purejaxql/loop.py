"""Pieces every training loop shares (replay Q-learning in ``q_learning.py``, PQN in ``pqn.py``): building
the wrapped envs and agents, acting, episode statistics, the carried metrics and the greedy evaluation
schedule. The loops themselves, and their math, live in their own files.

Shapes: B environments, N agents, Nt agents that learn, A actions (padded), T steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.config import RECURRENT_AGENT_TYPES
from purejaxql.environments import CTRolloutManager, EnvCarry
from purejaxql.evaluation import greedy_actions, make_greedy_eval, per_agent_metrics
from purejaxql.networks import AgentNetwork
from purejaxql.rl_math import epsilon_greedy, linear_schedule

__all__ = ["Setup", "Program", "build", "act", "shaping_weight", "shaping_metrics", "episode_stats",
           "initial_metrics", "record", "eval_key", "debug_print"]


@dataclass
class Setup:
    """Envs and agents of one training program."""
    config: Dict[str, Any]      # the resolved config
    env: CTRolloutManager       # NUM_ENVS training envs
    agents: Any                 # the agent variant over all N agents (acting, evaluation)
    learner: Any                # the variant over the Nt agents that learn (the loss)
    idx: Optional[np.ndarray]   # indices of the agents that learn (None: all)
    evaluate: Callable          # greedy evaluation (rng, agent params) -> test metrics
    num_agents: int             # N
    num_trained: int            # Nt

    def of_trained(self, x: jax.Array, axis: int) -> jax.Array:
        """Select the trained agents along ``axis`` (no-op when all agents learn)."""
        return x if self.idx is None else jnp.take(x, jnp.asarray(self.idx), axis=axis)


@dataclass(frozen=True, eq=False)
class Program:
    """A training program: ``program(rng) -> {"runner_state", "metrics"}`` runs all NUM_UPDATES updates
    (``jax.jit`` / ``jax.vmap`` it like a function); ``init(rng)`` and ``run(runner_state,
    update_indices)`` are the same program in pieces (the CLI runs chunks of updates between which it
    shows progress and writes checkpoints; the results are identical)."""
    config: Dict[str, Any]        # the resolved config
    init: Callable                # rng -> runner state
    run: Callable                 # (runner state, update indices (U,)) -> (runner state, metrics (U,))
    evaluate: Callable            # greedy evaluation: (rng, agent params) -> test metrics
    agents: Any                   # the agent variant over all N agents
    env: CTRolloutManager         # the NUM_ENVS training envs
    parts: Any                    # the loop's stages (a NamedTuple per loop), for tests and for hacking

    def __call__(self, rng: jax.Array) -> Dict[str, Any]:
        runner, metrics = self.run(self.init(rng), jnp.arange(self.config["NUM_UPDATES"]))
        return {"runner_state": runner, "metrics": metrics}

    @classmethod
    def of(cls, setup: "Setup", init: Callable, update: Callable, parts: Any) -> "Program":
        """The program of a loop: ``init``, then a scan of ``update(runner, update index)`` over the update
        indices (which come from the scan's xs, so conditions on them stay real branches under vmap)."""
        def run(runner, update_indices):
            return jax.lax.scan(update, runner, update_indices)
        return cls(config=setup.config, init=init, run=run, evaluate=setup.evaluate, agents=setup.agents,
                   env=setup.env, parts=parts)


def build(cfg: Mapping[str, Any], env, agents_cls) -> Setup:
    """Wrap ``env`` and make the agents the resolved config ``cfg`` (purejaxql.config.resolve_config) asks
    for. When some agents are frozen pretrained ones (``agents.trained_idx``), the team reward, global
    state and reported team return cover only the agents that learn."""
    cfg = dict(cfg)
    inputs = {"add_agent_id": cfg["OBS_AGENT_ID"], "add_last_action": cfg.get("OBS_LAST_ACTION", False),
              "add_state_last_action": cfg.get("STATE_LAST_ACTION", False)}
    wrapped = CTRolloutManager(env, cfg["NUM_ENVS"], **inputs)
    cnn = {}
    if cfg["AGENT_TYPE"] == "cnn":  # every agent observes an image of one shape (agent_checks.check_agent_inputs)
        cnn = dict(image_shape=tuple(env.observation_space(wrapped.agents[0]).shape),
                   cnn_channels=tuple(cfg["CNN_CHANNELS"]), cnn_kernel_sizes=tuple(cfg["CNN_KERNEL_SIZES"]),
                   cnn_strides=tuple(cfg["CNN_STRIDES"]), cnn_padding=cfg.get("CNN_PADDING", "VALID"))
    network = AgentNetwork(action_dim=wrapped.max_action_space, hidden_dim=cfg["AGENT_HIDDEN_DIM"],
                           init_scale=cfg["AGENT_INIT_SCALE"], recurrent=cfg["AGENT_TYPE"] in RECURRENT_AGENT_TYPES,
                           cell="lstm" if cfg["AGENT_TYPE"] == "lstm" else "gru",
                           num_layers=cfg.get("NUM_LAYERS", 1), norm_type=cfg.get("NORM_TYPE", "none"),
                           norm_input=cfg.get("NORM_INPUT", False),
                           input_norm_type=cfg.get("INPUT_NORM_TYPE", "batch_norm"),
                           dueling=cfg.get("DUELING", False), **cnn)
    N = wrapped.num_agents
    agents = agents_cls(network, N, wrapped.obs_size, last_action=inputs["add_last_action"])
    idx = agents.trained_idx
    trained_names = None if idx is None else [wrapped.agents[i] for i in idx]

    def wrap(batch):
        return CTRolloutManager(env, batch, training_agents=trained_names, **inputs)
    wrapped = wrapped if idx is None else wrap(cfg["NUM_ENVS"])  # rebuilt only when some agents are frozen
    test_env = wrap(cfg["TEST_NUM_ENVS"])
    evaluate = make_greedy_eval(test_env, agents.apply, agents.initial_hidden, cfg["TEST_NUM_STEPS"],
                                cfg["LOG_AGENTS_SEPARATELY"], team=idx, epsilon=cfg.get("TEST_EPSILON", 0.0))
    return Setup(config=cfg, env=wrapped, agents=agents, learner=agents.learner, idx=idx,
                 evaluate=evaluate, num_agents=N, num_trained=N if idx is None else len(idx))


def act(agents, params, carry: EnvCarry, epsilon: jax.Array, key: jax.Array):
    """One acting step of B envs: ε-greedy over available actions for the agents that learn, greedy for
    frozen pretrained ones. -> (hidden after obs (B, N, H), q (B, N, A), actions (B, N))."""
    hidden, q = agents.apply(params, carry.hidden, carry.obs[None], carry.first[None])
    B, N = carry.avail.shape[:2]
    keys = jax.random.split(key, (B, N))
    eps_greedy = jax.vmap(jax.vmap(epsilon_greedy, (0, 0, 0, None)), (0, 0, 0, None))
    actions = eps_greedy(keys, q[0], carry.avail, epsilon)
    if agents.trained_idx is not None:
        actions = jnp.where(agents.frozen_mask, greedy_actions(q[0], carry.avail), actions)
    return hidden, q[0], actions


def shaping_weight(cfg, timesteps: jax.Array):
    """The weight of the env's shaped reward after ``timesteps`` env steps: 1 annealed linearly to 0 over
    REW_SHAPING_HORIZON steps (JaxMARL's anneal), or None when the config adds no shaped reward."""
    horizon = cfg.get("REW_SHAPING_HORIZON", 0)
    if isinstance(horizon, (int, float)) and horizon <= 0:
        return None
    return linear_schedule(1.0, 0.0, horizon, timesteps)


def shaping_metrics(weight, shaped: jax.Array) -> Dict[str, jax.Array]:
    """The update's shaping metrics: the weight and the trained agents' shaped reward per env step, summed
    over agents and averaged over the rollout (``shaped`` (T, B, Nt), before weighting); {} without shaping."""
    if weight is None:
        return {}
    return {"rew_shaping_weight": weight, "shaped_rewards": shaped.sum(-1).mean()}


def episode_stats(setup: Setup, agent_return: jax.Array, done: jax.Array, won: jax.Array, log_agents: bool):
    """Returns of the episodes that ended during a rollout: agent_return (T, B, N) (each agent's return
    where done), done, won (T, B) -> (metrics, number of episodes that ended)."""
    n_done = done.sum()
    agent_means = jnp.sum(agent_return * done[..., None], (0, 1)) / jnp.maximum(n_done, 1)  # (N,)
    stats = {"returned_episode_returns": setup.of_trained(agent_means, 0).sum()}
    if log_agents:
        stats.update(per_agent_metrics("returned_episode_returns", agent_means, setup.env.agents))
    if setup.env.has_won:
        stats["returned_won_episode"] = jnp.sum(won & done) / jnp.maximum(n_done, 1)
    return stats, n_done


def initial_metrics(setup: Setup, log_agents: bool) -> Dict[str, jax.Array]:
    """The episode and evaluation metrics carried between updates, NaN until first measured."""
    names = ["returned_episode_returns", "test_returned_episode_returns", "test_returned_episode_returns_std"]
    if setup.env.has_won:
        names += ["returned_won_episode", "test_returned_won_episode"]
    if log_agents:
        for prefix in ("returned_episode_returns", "test_returned_episode_returns"):
            names += list(per_agent_metrics(prefix, jnp.zeros(setup.num_agents), setup.env.agents))
    return {k: jnp.float32(jnp.nan) for k in names}


def record(cfg, setup: Setup, last, stats, n_done, update_idx, test_rng, train, loss, qvals, epsilon, extra=None):
    """End of an update's bookkeeping: carry the latest episode metrics forward, run the greedy evaluation
    when it is due (every TEST_EVERY updates and at the last one, with key :func:`eval_key`), and return
    (carried metrics, the update's metrics). ``train`` is the train state (params, counters); ``extra``
    (a dict) joins the update's metrics (:func:`shaping_metrics`)."""
    last = {**last, **{k: jnp.where(n_done > 0, v, last[k]) for k, v in stats.items()}}
    do_test = (update_idx % cfg["TEST_EVERY"] == 0) | (update_idx == cfg["NUM_UPDATES"] - 1)
    if cfg["TEST_DURING_TRAINING"]:
        test_keys = [k for k in last if k.startswith("test_")]
        k_test = eval_key(test_rng, update_idx)
        agent_params = train.params["agent"]
        last = {**last, **jax.lax.cond(
            do_test, lambda: {k: v for k, v in setup.evaluate(k_test, agent_params).items() if k in test_keys},
            lambda: {k: last[k] for k in test_keys})}
    metrics = {"env_step": train.timesteps, "update_steps": train.n_updates, "grad_steps": train.grad_steps,
               "loss": loss, "qvals": qvals, "epsilon": epsilon, **(extra or {}), **last}
    if cfg["DEBUG"]:
        jax.debug.callback(debug_print, metrics, do_test)
    return last, metrics


def eval_key(test_rng: jax.Array, update_idx) -> jax.Array:
    """Key of the greedy evaluation at update ``update_idx`` (also used to reproduce it from a checkpoint)."""
    return jax.random.fold_in(test_rng, update_idx)


def debug_print(metrics, show):
    """Host-only: reads the values, starts no JAX computation (a callback must not, see README)."""
    if bool(np.asarray(show)):
        print(" ".join(f"{k}={float(np.asarray(v)):.4g}" for k, v in metrics.items()), flush=True)
