"""Configuration: documented defaults, strict key checking, derived quantities.

Every key an algorithm reads has a default here (see README for the meaning of each). A key that no
algorithm reads is an error naming it, with the closest known key, so a typo is never ignored.
"""
from __future__ import annotations

import difflib
import sys
from typing import Any, Dict, Mapping

__all__ = ["ConfigError", "Q_LEARNING_DEFAULTS", "QMIX_DEFAULTS", "PQN_DEFAULTS", "RUN_KEYS", "DERIVED_KEYS",
           "defaults_for", "resolve_config", "AGENT_TYPES", "RECURRENT_AGENT_TYPES", "settable", "check_run_keys",
           "unknown_key", "ALG_KEYS"]


class ConfigError(ValueError):
    """A user mistake in the configuration; the message names the culprit."""


# Replay-based Q-learning (IQL, VDN, QMIX). None means "derived from the env / other keys".
# PQN_DEFAULTS below start from these.
Q_LEARNING_DEFAULTS: Dict[str, Any] = {
    "TOTAL_TIMESTEPS": 2e6,        # env steps summed over the NUM_ENVS environments
    "NUM_ENVS": 8,                 # parallel training environments (B)
    "NUM_STEPS": None,             # steps per env per update (T); default env.max_steps
    "BUFFER_SIZE": 5000,           # replay capacity in stored sequences of NUM_STEPS steps
    "BUFFER_BATCH_SIZE": 32,       # sequences per gradient step
    "AGENT_TYPE": "rnn",           # "rnn" (GRU agent), "lstm" (LSTM agent, carries [c, h]), "ff"
                                   # (feed-forward agent) or "cnn" (feed-forward, convolutions on image obs)
    "CNN_CHANNELS": [16],          # AGENT_TYPE=cnn: output channels of each convolution (VALID padding)
    "CNN_KERNEL_SIZES": [3],       # AGENT_TYPE=cnn: square kernel size of each convolution
    "CNN_STRIDES": None,           # AGENT_TYPE=cnn: stride of each convolution; null = 1 for each
    "CNN_PADDING": "VALID",        # AGENT_TYPE=cnn: VALID (no padding) or SAME (output as large as the input)
    "AGENT_HIDDEN_DIM": 64,        # width of the agent network
    "NUM_LAYERS": 1,               # hidden Dense layers of the agent network (after the convolutions of cnn
                                   # agents, before the GRU / LSTM of rnn / lstm ones)
    "AGENT_INIT_SCALE": 1.0,       # orthogonal init scale of the agent's dense layers
    "NORM_TYPE": "none",           # after each hidden Dense (and convolution): none | layer_norm (PQN: more)
    "DUELING": False,              # dueling head: Q = V + A - mean A (Wang et al. 2016; JaxMARL's Hanabi PQN)
    "OBS_AGENT_ID": None,          # append a one-hot agent id to observations; default: on for shared
                                   # parameters (_ps), off for per-agent parameters (_ns)
    "OBS_LAST_ACTION": False,      # append the one-hot of the agent's previous action to its observation
                                   # (zeros at each episode's first step; pymarl's obs_last_action)
    "STATE_LAST_ACTION": False,    # append every agent's previous action (one-hot) to the global state the
                                   # mixer reads (zeros at each episode's first step; pymarl's state_last_action)
    "EPSILON_START": 1.0,          # ε-greedy: initial ε
    "EPSILON_FINISH": 0.05,        # ε-greedy: final ε
    "EPSILON_ANNEAL_TIME": None,   # env steps over which ε anneals linearly; default 10% of TOTAL_TIMESTEPS
    "MAX_GRAD_NORM": 10.0,         # global-norm gradient clipping
    "TARGET_UPDATE_INTERVAL": 200,  # updates between target-network syncs
    "TAU": 1.0,                    # target sync weight: 1 = hard copy, < 1 = Polyak averaging
    "NUM_EPOCHS": 1,               # gradient steps per update
    "LR": 0.005,                   # learning rate
    "LR_LINEAR_DECAY": True,       # decay LR linearly to ~0 over training (JaxMARL's ql_rnn_mpe; QMIX on MPE
                                   # spread ends near -72 without it instead of -40)
    "OPTIMIZER": "adam",           # "adam" or "radam"
    "GAMMA": 0.99,                 # discount
    "REW_SCALE": 1.0,              # rewards are multiplied by this in the loss
    "REW_SHAPING_HORIZON": 0,      # env steps over which the env's shaped reward (Overcooked's) is added to the
                                   # learnt reward with a weight annealed linearly from 1 to 0 (JaxMARL's key;
                                   # the logged returns stay the env's own); 0 = not added
    "TIMEOUT_AS_TERMINAL": None,   # False: the last step of an episode cut by the time limit (env.max_steps)
                                   # leaves the loss; True: every episode end is terminal. None = from the
                                   # env: False where episode ends are time limits, not terminal states
                                   # (utils.time_limit_truncates: MPE, SMAX), True otherwise
    "LEARNING_STARTS": 10000,      # env steps collected before the first gradient step
    "TD_LAMBDA": 0.0,              # λ of the TD(λ) targets over each sampled sequence (0 = 1-step targets;
                                   # pymarl2 uses 0.6 for QMIX on SMAC)
    "PER": False,                  # prioritised replay: sequences drawn by the priority of their TD errors
    "PER_ALPHA": 0.6,              # priority exponent α: P(i) ∝ p_i^α (0 = uniform)
    "PER_BETA": 0.4,               # importance-weight exponent β at the start, annealed linearly to 1
    "PER_ETA": 0.9,                # a sequence's priority: η max|δ| + (1 - η) mean|δ| over its steps
    "REW_NORM": False,             # standardise the learnt reward by its running mean and std (loss only)
    "TEST_DURING_TRAINING": True,  # run greedy evaluation inside the compiled program
    "TEST_INTERVAL": 0.05,         # fraction of updates between greedy evaluations
    "TEST_NUM_ENVS": 512,          # greedy evaluation episodes (one per env)
    "TEST_NUM_STEPS": None,        # steps of a greedy evaluation; default env.max_steps + 1
    "TEST_EPSILON": 0.0,           # ε of the evaluation's policy (0 = greedy; EPyMARL's evaluation_epsilon)
    "DEBUG": False,                # print metrics at every greedy evaluation (host callback)
    "LOG_AGENTS_SEPARATELY": False,  # also log returns per agent and per team (default on for IQL)
    # environment identity: read by the CLI to build the env, accepted so a flat config can be passed
    "ENV_NAME": None,
    "ENV_KWARGS": {},
    "MAP_NAME": None,
    "TASK": None,                  # lbf / rware task in EPyMARL's naming (8x8-2p-2f-coop, tiny-2ag, ...)
}

# PQN (online Q(λ) over many envs, no replay, no target network). Same meaning as above where shared.
PQN_DEFAULTS: Dict[str, Any] = {
    **{k: v for k, v in Q_LEARNING_DEFAULTS.items()
       if k not in ("BUFFER_SIZE", "BUFFER_BATCH_SIZE", "TARGET_UPDATE_INTERVAL", "TAU", "LEARNING_STARTS",
                    "TD_LAMBDA", "PER", "PER_ALPHA", "PER_BETA", "PER_ETA", "REW_NORM", "STATE_LAST_ACTION")},
    "NUM_ENVS": 128,
    "NUM_STEPS": 16,               # steps per env per rollout (T)
    "NUM_EPOCHS": 4,               # passes over each rollout
    "NUM_MINIBATCHES": 16,         # gradient steps per pass (each on 1/NUM_MINIBATCHES of the rollout)
    "AGENT_TYPE": "ff",
    "AGENT_HIDDEN_DIM": 256,
    "NUM_LAYERS": 2,               # hidden Dense layers of the agent network (before the GRU if any)
    "NORM_TYPE": "layer_norm",     # after each hidden Dense: layer_norm | batch_norm | batch_renorm | none
    "NORM_INPUT": False,           # normalise the observations (with INPUT_NORM_TYPE)
    "INPUT_NORM_TYPE": "batch_norm",  # NORM_INPUT's normalisation: batch_norm | batch_renorm
    "MEMORY_WINDOW": 0,            # GRU agents: steps of the previous rollout replayed before each rollout
                                   # to warm up the hidden state (context only, not in the loss)
    "LR_LINEAR_DECAY": False,
    "MIXER": "vdn",                # vdn: Q(λ) on the team value Σ_i Q_i and team reward; none: independent
    "LAMBDA": 0.65,                # λ of Peng's Q(λ) (0 = one-step targets)
    "EPSILON_FINISH": 0.1,
    "MAX_GRAD_NORM": 1.0,
    "LR": 0.0005,
    "OPTIMIZER": "radam",
}

# Keys of the mixers (QMIX's hypernetwork mixer, also the monotonic part of weighted QMIX).
QMIX_DEFAULTS: Dict[str, Any] = {
    "MIXER_EMBEDDING_DIM": 32,        # E: width of the mixing layer (Qatten: of each attention head)
    "MIXER_HYPERNET_HIDDEN_DIM": 64,  # hidden width of the hypernetworks (QPLEX, Qatten: of their state MLPs)
    "MIXER_INIT_SCALE": 0.001,        # orthogonal init scale of the hypernetworks' output layers
}
QPLEX_DEFAULTS: Dict[str, Any] = {
    "MIXER_HYPERNET_HIDDEN_DIM": 64,
    "QPLEX_NUM_KERNEL": 10,           # kernels of λ_i(s, u) (QPLEX authors' qplex.yaml: 10; SMAC config, pymarl2: 4)
}
QATTEN_DEFAULTS: Dict[str, Any] = {
    "MIXER_EMBEDDING_DIM": 32,
    "MIXER_HYPERNET_HIDDEN_DIM": 64,
    "QATTEN_NUM_HEADS": 4,            # attention heads (pymarl2's n_head)
}
WQMIX_DEFAULTS: Dict[str, Any] = {
    **QMIX_DEFAULTS,
    "WQMIX_ALPHA": 0.5,               # α: weight of the joint actions the weighting discounts (pymarl's w);
                                      # owqmix defaults to 0.5, cwqmix to 0.75
    "WQMIX_CENTRAL_MIXER_DIM": 256,   # width of Q̂*'s feed-forward mixer (pymarl's central_mixing_embed_dim)
}
# Independent learners are also used in competitive games, where a team sum means little: IQL logs every
# agent's and every team's returns by default.
_ALGORITHM_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "iql": {**Q_LEARNING_DEFAULTS, "LOG_AGENTS_SEPARATELY": True},
    "vdn": Q_LEARNING_DEFAULTS,
    "qmix": {**Q_LEARNING_DEFAULTS, **QMIX_DEFAULTS},
    "qplex": {**Q_LEARNING_DEFAULTS, **QPLEX_DEFAULTS},
    "owqmix": {**Q_LEARNING_DEFAULTS, **WQMIX_DEFAULTS},
    "cwqmix": {**Q_LEARNING_DEFAULTS, **WQMIX_DEFAULTS, "WQMIX_ALPHA": 0.75},
    "qatten": {**Q_LEARNING_DEFAULTS, **QATTEN_DEFAULTS},
    "pqn": PQN_DEFAULTS,
}


def defaults_for(algorithm: str) -> Dict[str, Any]:
    """Every key ``algorithm`` (iql | vdn | qmix | qplex | owqmix | cwqmix | qatten | pqn) reads, with its
    default."""
    return dict(_ALGORITHM_DEFAULTS[algorithm])


# Which algorithms read a key that is not common to all (for "not used by X" errors).
KEY_OWNERS: Dict[str, str] = {
    k: "/".join(a for a, d in _ALGORITHM_DEFAULTS.items() if k in d)
    for k in set().union(*_ALGORITHM_DEFAULTS.values())
    if not all(k in d for d in _ALGORITHM_DEFAULTS.values())}

# Keys of a run (CLI, logging) that make_train accepts and ignores.
RUN_KEYS = {"SEED", "NUM_SEEDS", "ENTITY", "PROJECT", "WANDB_MODE", "WANDB_LOG_ALL_SEEDS", "PROGRESS",
            "WATCHDOG_TIMEOUT", "SAVE_PATH", "EVAL_ONLY", "PRETRAINED_AGENTS", "CHECKPOINT_INTERVAL",
            "CHECKPOINT_KEEP", "NAN_CHECK", "RESUME", "HYP_TUNE", "TUNE_NUM_SEEDS", "TUNE", "DISTRIBUTED",
            "SEED_BATCHING"}
# Keys resolve_config adds (not settable; left out of saved configs).
DERIVED_KEYS = ("NUM_UPDATES", "FIRST_LEARN_UPDATE", "TEST_EVERY")
# Every key of an alg config (any algorithm's, so "not used by X" can name the owner).
ALG_KEYS = set().union(*_ALGORITHM_DEFAULTS.values()) | RUN_KEYS
NORM_TYPES = ("layer_norm", "batch_norm", "batch_renorm", "none")  # PQN's NORM_TYPE (purejaxql.networks.AgentNetwork)
AGENT_TYPES = ("ff", "rnn", "lstm", "cnn")  # AGENT_TYPE: feed-forward, GRU, LSTM, convolutional (networks.AgentNetwork)
RECURRENT_AGENT_TYPES = ("rnn", "lstm")     # the agent types that carry a hidden state
BOOL_KEYS = ("LR_LINEAR_DECAY", "TEST_DURING_TRAINING", "DEBUG", "TIMEOUT_AS_TERMINAL", "OBS_AGENT_ID", "PER",
             "REW_NORM", "OBS_LAST_ACTION", "STATE_LAST_ACTION", "LOG_AGENTS_SEPARATELY", "NORM_INPUT", "DUELING")


def settable(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """A resolved config without the keys resolve_config derives: what config.yaml, checkpoints and RESUME
    keep."""
    return {k: v for k, v in cfg.items() if k not in DERIVED_KEYS}


def check_run_keys(top: Mapping[str, Any]) -> None:
    """Run-level keys (config/config.yaml): types and ranges, naming the culprit."""
    for key in ("PROGRESS", "NAN_CHECK", "WANDB_LOG_ALL_SEEDS", "HYP_TUNE", "DISTRIBUTED"):
        if key in top and not isinstance(top[key], bool):
            raise ConfigError(f"{key} must be True or False, got {top[key]!r}")
    for key, low in (("SEED", None), ("NUM_SEEDS", 1), ("CHECKPOINT_KEEP", 1), ("TUNE_NUM_SEEDS", 1)):
        if key in top:
            v = top[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{key} must be an integer, got {v!r}")
            if low is not None and v < low:
                raise ConfigError(f"{key} must be >= {low}, got {v}")
    for key in ("CHECKPOINT_INTERVAL", "WATCHDOG_TIMEOUT"):
        if key in top:
            v = _number(top, key) if top[key] is not None else 0.0
            if v < 0:
                raise ConfigError(f"{key} must be >= 0, got {v:g}")
    if top.get("SEED_BATCHING", "vmap") not in ("vmap", "map"):
        raise ConfigError(f"SEED_BATCHING must be vmap or map, got {top['SEED_BATCHING']!r}")
    if top.get("WANDB_MODE", "disabled") not in ("disabled", "offline", "online"):
        raise ConfigError(f"WANDB_MODE must be disabled, offline or online, got {top['WANDB_MODE']!r}")


def unknown_key(key: str, known, alg_name, message: str = "unknown config key {key!r} for {alg}{hint}"
                ) -> ConfigError:
    """The error for a key nobody reads, with the closest known key as a hint."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(message.format(key=key, alg=alg_name, hint=hint))


def _is_array(v) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(v, jax.Array)


def _number(cfg, key, cast=float):
    try:
        return cast(cfg[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {cfg[key]!r}") from None


def resolve_config(config: Mapping[str, Any], spec, env=None) -> Dict[str, Any]:
    """The one place a config is resolved: fill the defaults of ``spec`` (a :class:`purejaxql.spec.Spec`:
    its algorithm's keys, OBS_AGENT_ID by its variant), reject unknown keys, check types and ranges, and
    add the derived keys (NUM_UPDATES, ...). The CLI resolves once, up front, and passes the result down;
    resolving a resolved config gives it back unchanged (``make_train`` calls this for notebook users).

    ``env=None`` checks what can be checked without the environment (the CLI does this before the heavy
    libraries load): keys whose default comes from the env (NUM_STEPS, TEST_NUM_STEPS,
    TIMEOUT_AS_TERMINAL) stay None when unset, and the checks that need them are left for the call with
    the env. A value given as a JAX array (a traced hyperparameter: HYP_TUNE vmaps the program over it,
    see purejaxql.tuning) is kept as it is; its range is checked where its concrete values are known."""
    traced = {k: v for k, v in config.items() if _is_array(v)}
    if traced:
        cfg = resolve_config({k: v for k, v in config.items() if k not in traced}, spec, env)
        return {**cfg, **traced}
    defaults = defaults_for(spec.algorithm)
    alg_name = spec.algorithm
    cfg = settable(config)
    unknown = [k for k in cfg if k not in defaults and k not in RUN_KEYS]
    if unknown:
        k = unknown[0]
        owner = KEY_OWNERS.get(k)
        if owner:
            why = (": pqn learns online from each rollout, with no replay buffer or target network"
                   if alg_name == "pqn" and "iql" in owner.split("/") else "")
            raise ConfigError(f"config key {k!r} is not used by {alg_name} (it belongs to {owner}){why}")
        raise unknown_key(k, list(defaults) + sorted(RUN_KEYS), alg_name)
    for k, v in defaults.items():
        cfg.setdefault(k, v)
    if cfg["OBS_AGENT_ID"] is None:
        cfg["OBS_AGENT_ID"] = spec.obs_agent_id_default

    if env is not None:
        max_steps = getattr(env, "max_steps", None)
        # An episode lasts at most max_steps + 1 steps (MPE's done comes one step after max_steps), so a
        # greedy evaluation of that length always sees one whole episode per env.
        for key, extra in (("NUM_STEPS", 0), ("TEST_NUM_STEPS", 1)):
            if cfg[key] is None:
                if max_steps is None:
                    raise ConfigError(f"{key} is not set and the environment has no max_steps to default to")
                cfg[key] = int(max_steps) + extra
        if cfg["TIMEOUT_AS_TERMINAL"] is None:
            from purejaxql.environments import time_limit_truncates
            cfg["TIMEOUT_AS_TERMINAL"] = not time_limit_truncates(env)
    ints = ["NUM_ENVS", "NUM_STEPS", "BUFFER_SIZE", "BUFFER_BATCH_SIZE", "AGENT_HIDDEN_DIM",
            "TARGET_UPDATE_INTERVAL", "NUM_EPOCHS", "TEST_NUM_ENVS", "TEST_NUM_STEPS", "NUM_MINIBATCHES",
            "NUM_LAYERS"]
    for key in ints:
        if key in cfg and cfg[key] is not None:  # None: from the env, known once it is built
            cfg[key] = _number(cfg, key, lambda v: int(float(v)))
            if cfg[key] <= 0:
                raise ConfigError(f"{key} must be > 0, got {cfg[key]}")
    floats = ["TOTAL_TIMESTEPS", "LR", "GAMMA", "EPSILON_START", "EPSILON_FINISH", "MAX_GRAD_NORM",
              "TAU", "REW_SCALE", "LEARNING_STARTS", "TEST_INTERVAL", "AGENT_INIT_SCALE", "LAMBDA", "TD_LAMBDA",
              "PER_ALPHA", "PER_BETA", "PER_ETA", "TEST_EPSILON", "REW_SHAPING_HORIZON"]
    for key in floats:
        if key in cfg:
            cfg[key] = _number(cfg, key)
    if cfg["REW_SHAPING_HORIZON"] < 0:
        raise ConfigError(f"REW_SHAPING_HORIZON must be >= 0 (0: no shaping), got {cfg['REW_SHAPING_HORIZON']}")
    if env is not None and cfg["REW_SHAPING_HORIZON"] > 0:
        from purejaxql.environments import reports_shaped_reward
        if not reports_shaped_reward(env):
            raise ConfigError(f"REW_SHAPING_HORIZON={cfg['REW_SHAPING_HORIZON']:g} needs an env that pays a shaped "
                              f"reward (infos['shaped_reward'], as Overcooked); {getattr(env, 'name', type(env).__name__)} "
                              f"does not: leave REW_SHAPING_HORIZON at 0")
    if cfg["LR"] <= 0:
        raise ConfigError(f"LR must be > 0, got {cfg['LR']}")
    if not 0.0 < cfg["GAMMA"] <= 1.0:
        raise ConfigError(f"GAMMA must be in (0, 1], got {cfg['GAMMA']}")
    for key in ("EPSILON_START", "EPSILON_FINISH", "TEST_EPSILON"):
        if key in cfg and not 0.0 <= cfg[key] <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {cfg[key]}")
    for key in ("TD_LAMBDA", "PER_ALPHA", "PER_BETA", "PER_ETA"):
        if key in cfg and not 0.0 <= cfg[key] <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {cfg[key]}")
    if "WQMIX_ALPHA" in cfg:
        cfg["WQMIX_ALPHA"] = _number(cfg, "WQMIX_ALPHA")
        if not 0.0 <= cfg["WQMIX_ALPHA"] <= 1.0:
            raise ConfigError(f"WQMIX_ALPHA must be in [0, 1], got {cfg['WQMIX_ALPHA']}")
    if "TAU" in cfg and not 0.0 < cfg["TAU"] <= 1.0:
        raise ConfigError(f"TAU must be in (0, 1], got {cfg['TAU']}")
    if cfg.get("AGENT_TYPE") not in (None,) + AGENT_TYPES:
        raise ConfigError(f"AGENT_TYPE must be one of {list(AGENT_TYPES)}, got {cfg['AGENT_TYPE']!r}")
    from purejaxql.agent_checks import check_agent_inputs  # (imports this module)
    check_agent_inputs(cfg, env)
    if cfg.get("OPTIMIZER") not in (None, "adam", "radam"):
        raise ConfigError(f"OPTIMIZER must be 'adam' or 'radam', got {cfg['OPTIMIZER']!r}")

    for key in ("MIXER_EMBEDDING_DIM", "MIXER_HYPERNET_HIDDEN_DIM", "QPLEX_NUM_KERNEL", "QATTEN_NUM_HEADS",
                "WQMIX_CENTRAL_MIXER_DIM"):
        if key in cfg:
            cfg[key] = _number(cfg, key, lambda v: int(float(v)))
            if cfg[key] <= 0:
                raise ConfigError(f"{key} must be > 0, got {cfg[key]}")
    for key in BOOL_KEYS:
        if key in cfg and not isinstance(cfg[key], bool) and not (env is None and cfg[key] is None):
            raise ConfigError(f"{key} must be True or False, got {cfg[key]!r}")
    if cfg["MAX_GRAD_NORM"] <= 0:
        raise ConfigError(f"MAX_GRAD_NORM must be > 0, got {cfg['MAX_GRAD_NORM']}")
    if cfg["TOTAL_TIMESTEPS"] >= 2 ** 31:
        raise ConfigError(f"TOTAL_TIMESTEPS must be < 2**31 (step counters are int32), got "
                          f"{cfg['TOTAL_TIMESTEPS']:g}")
    if cfg["NUM_STEPS"] is None or cfg["TEST_NUM_STEPS"] is None:
        return cfg  # env=None: the rest depends on the env's episode length
    rollout = cfg["NUM_ENVS"] * cfg["NUM_STEPS"]
    cfg["NUM_UPDATES"] = int(cfg["TOTAL_TIMESTEPS"] // rollout)
    if cfg["NUM_UPDATES"] < 1:
        raise ConfigError(f"TOTAL_TIMESTEPS={cfg['TOTAL_TIMESTEPS']:g} is smaller than one rollout "
                          f"(NUM_ENVS*NUM_STEPS = {rollout})")
    if "LEARNING_STARTS" in cfg:
        _check_replay(cfg, rollout)
    if "LAMBDA" in cfg:
        _check_pqn(cfg)
    if cfg.get("EPSILON_ANNEAL_TIME", 0) is None:
        cfg["EPSILON_ANNEAL_TIME"] = 0.1 * cfg["TOTAL_TIMESTEPS"]
    cfg["EPSILON_ANNEAL_TIME"] = _number(cfg, "EPSILON_ANNEAL_TIME")
    cfg["TEST_EVERY"] = max(1, int(cfg["TEST_INTERVAL"] * cfg["NUM_UPDATES"]))
    return cfg


def _check_replay(cfg, rollout):
    # first update with a gradient step: two chunks stored and more than LEARNING_STARTS steps taken
    cfg["FIRST_LEARN_UPDATE"] = max(1, int(cfg["LEARNING_STARTS"] // rollout))
    if cfg["FIRST_LEARN_UPDATE"] >= cfg["NUM_UPDATES"]:
        raise ConfigError(f"LEARNING_STARTS ({cfg['LEARNING_STARTS']:g}) leaves no update to learn in: training "
                          f"takes {cfg['NUM_UPDATES']} updates of {rollout} env steps and learning needs two "
                          "stored rollouts")
    if cfg["TARGET_UPDATE_INTERVAL"] > cfg["NUM_UPDATES"]:
        # runs (a short smoke run of a shipped config), but the TD targets then come from the initial
        # network all along: one line on stderr, once per process for a given message
        message = (f"purejaxql: warning: TARGET_UPDATE_INTERVAL ({cfg['TARGET_UPDATE_INTERVAL']}) exceeds the "
                   f"number of updates ({cfg['NUM_UPDATES']}): the target network is never synced and the TD "
                   "targets come from the initial parameters")
        shown = _check_replay.__dict__.setdefault("warned", set())
        if message not in shown:
            shown.add(message)
            print(message, file=sys.stderr, flush=True)
    if cfg["NORM_TYPE"] not in ("none", "layer_norm"):  # (BatchNorm needs PQN's train-mode passes)
        raise ConfigError(f"NORM_TYPE must be 'none' or 'layer_norm' for replay learners, got {cfg['NORM_TYPE']!r}")
    if cfg["BUFFER_SIZE"] < 2 * cfg["NUM_ENVS"]:
        raise ConfigError(f"BUFFER_SIZE ({cfg['BUFFER_SIZE']}) must hold at least two sequences per env "
                          f"(2 * NUM_ENVS = {2 * cfg['NUM_ENVS']})")
    if cfg["BUFFER_BATCH_SIZE"] > cfg["BUFFER_SIZE"]:
        raise ConfigError(f"BUFFER_BATCH_SIZE ({cfg['BUFFER_BATCH_SIZE']}) must not exceed "
                          f"BUFFER_SIZE ({cfg['BUFFER_SIZE']})")


def _check_pqn(cfg):
    if not 0.0 <= cfg["LAMBDA"] <= 1.0:
        raise ConfigError(f"LAMBDA must be in [0, 1], got {cfg['LAMBDA']}")
    if cfg["MIXER"] not in ("vdn", "none"):
        raise ConfigError(f"MIXER must be 'vdn' or 'none', got {cfg['MIXER']!r}")
    if cfg["NORM_TYPE"] not in NORM_TYPES:
        raise ConfigError(f"NORM_TYPE must be one of {list(NORM_TYPES)}, got {cfg['NORM_TYPE']!r}")
    if cfg["INPUT_NORM_TYPE"] not in ("batch_norm", "batch_renorm"):
        raise ConfigError(f"INPUT_NORM_TYPE must be 'batch_norm' or 'batch_renorm', got {cfg['INPUT_NORM_TYPE']!r}")
    cfg["MEMORY_WINDOW"] = _number(cfg, "MEMORY_WINDOW", lambda v: int(float(v)))
    if cfg["AGENT_TYPE"] in RECURRENT_AGENT_TYPES:
        if not 0 <= cfg["MEMORY_WINDOW"] <= cfg["NUM_STEPS"]:
            raise ConfigError(f"MEMORY_WINDOW must be in [0, NUM_STEPS={cfg['NUM_STEPS']}], got "
                              f"{cfg['MEMORY_WINDOW']}")
        samples, what = cfg["NUM_ENVS"], "NUM_ENVS (recurrent agents learn from whole env sequences)"
    else:
        if cfg["MEMORY_WINDOW"] != 0:
            raise ConfigError("MEMORY_WINDOW only applies to recurrent agents (AGENT_TYPE=rnn or lstm)")
        samples, what = cfg["NUM_ENVS"] * cfg["NUM_STEPS"], "NUM_ENVS * NUM_STEPS (transitions per rollout)"
    if samples % cfg["NUM_MINIBATCHES"]:
        raise ConfigError(f"NUM_MINIBATCHES ({cfg['NUM_MINIBATCHES']}) must divide {what} = {samples}")
