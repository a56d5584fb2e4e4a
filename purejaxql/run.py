"""Command line glue shared by every entry point: hydra config, env creation, seeds, progress, wandb.

``python -m purejaxql.qmix_ps +alg=qmix_mpe NUM_SEEDS=4 alg.LR=0.001``

The training program is the same one ``make_train`` returns; the CLI runs it in chunks of updates
(``train.init`` then ``train.run`` over consecutive update indices, carrying the full state), which gives
identical results to one ``jax.jit(train)`` call while letting the terminal show progress between
chunks and a watchdog notice a run that stopped making progress.
"""
from __future__ import annotations

import faulthandler
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from purejaxql.config import ConfigError

CONFIG_PACKAGE = "purejaxql.conf"


def available_algs() -> List[str]:
    from importlib.resources import files
    return sorted(p.name[:-5] for p in files(CONFIG_PACKAGE).joinpath("alg").iterdir()
                  if p.name.endswith(".yaml"))


def import_jaxmarl():
    """``import jaxmarl`` without the lines it prints on its first import ("Importing submoduled
    environments...", "... not found. Skipping import."): a run shows only what purejaxql says (what
    it writes to stderr still shows)."""
    if "jaxmarl" not in sys.modules:
        import io
        # jaxmarl's MABrax module sets sys.stdout / sys.stderr back to sys.__stdout__ / sys.__stderr__ while
        # importing, so those are pointed at the same streams too, and all four are restored afterwards
        saved = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
        sys.stdout = sys.__stdout__ = io.StringIO()
        sys.__stderr__ = sys.stderr
        try:
            import jaxmarl  # noqa: F401
        finally:
            sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved
    return sys.modules["jaxmarl"]


def make_env(cfg: Dict[str, Any]):
    """Build the JaxMARL env named by ENV_NAME (+ MAP_NAME for SMAX, ENV_KWARGS)."""
    jaxmarl = import_jaxmarl()
    name = cfg.get("ENV_NAME")
    kwargs = dict(cfg.get("ENV_KWARGS") or {})
    if name not in jaxmarl.registered_envs:
        import difflib
        close = difflib.get_close_matches(str(name), jaxmarl.registered_envs, n=3)
        raise ConfigError(f"unknown ENV_NAME {name!r}" + (f"; close matches: {close}" if close else ""))
    if "SMAX" in name:
        from jaxmarl.environments.smax import map_name_to_scenario
        map_name = cfg.get("MAP_NAME") or "3m"
        try:
            kwargs["scenario"] = map_name_to_scenario(map_name)
        except Exception:
            raise ConfigError(f"unknown SMAX MAP_NAME {map_name!r}") from None
    if name.startswith("MPE") and "action_type" not in kwargs:
        try:  # some MPE scenarios default to continuous actions; ask for discrete ones where possible
            return jaxmarl.make(name, action_type="Discrete", **kwargs)
        except TypeError:  # the scenario takes no action_type
            pass
    return jaxmarl.make(name, **kwargs)


def chunk_size(num_updates: int, target_chunks: int = 100) -> int:
    """The divisor of num_updates (so one compile serves every chunk) that makes the number of chunks
    closest to ``target_chunks`` (ratio-wise), keeping at least 20 chunks where possible."""
    divisors = [d for d in range(1, num_updates + 1) if num_updates % d == 0]
    allowed = [d for d in divisors if num_updates // d >= min(20, num_updates)]
    return min(allowed, key=lambda d: (abs(np.log(num_updates / d / target_chunks)), d))


class Watchdog:
    """Fails loudly when no chunk of updates finishes within the allowed time.

    XLA programs cannot be interrupted, so on a stall the watchdog prints every thread's stack and
    ends the process with exit code 3 instead of leaving a silent terminal.
    """

    def __init__(self, timeout: float):
        self.timeout, self.last, self.allowed = timeout, time.time(), 2 * timeout
        self.done = threading.Event()
        self.slowest = 0.0
        if timeout > 0:
            threading.Thread(target=self._watch, daemon=True).start()

    def beat(self, chunk_seconds: float):
        self.slowest = max(self.slowest, chunk_seconds)
        self.allowed = max(self.timeout, 10 * self.slowest)
        self.last = time.time()

    def stop(self):
        self.done.set()

    def _watch(self):
        while not self.done.wait(1.0):
            if time.time() - self.last > self.allowed:
                sys.stderr.write(
                    f"\npurejaxql: no progress for {time.time() - self.last:.0f} s (allowed {self.allowed:.0f} s): "
                    "the XLA program appears stuck. Thread stacks follow. Raise WATCHDOG_TIMEOUT if the run "
                    "is just slow, or set WATCHDOG_TIMEOUT=0 to disable.\n")
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                os._exit(3)


class Progress:
    """One updating terminal line: env steps, steps/s, ETA, ε, latest greedy return."""

    def __init__(self, total_steps: float, enabled: bool = True, done_steps: float = 0.0,
                 min_interval: float = 0.25):
        self.total, self.enabled = total_steps, enabled and sys.stderr.isatty()
        self.start = (time.time(), float(done_steps))
        self.plain = enabled and not self.enabled
        self.last_plain, self.last_drawn, self.min_interval = 0.0, 0.0, min_interval

    def update(self, metrics: Dict[str, np.ndarray], last: bool = False):
        now = time.time()
        if not (self.enabled or self.plain) or (now - self.last_drawn < self.min_interval and not last):
            return  # at most a few redraws per second
        self.last_drawn = now
        steps = float(np.mean(metrics["env_step"][..., -1]))
        rate = (steps - self.start[1]) / max(now - self.start[0], 1e-9)
        eta = (self.total - steps) / rate if rate > 0 else float("nan")
        ret = np.nanmean(metrics["test_returned_episode_returns"][..., -1]) \
            if np.any(np.isfinite(metrics["test_returned_episode_returns"][..., -1])) else float("nan")
        line = (f"env steps {steps:,.0f}/{self.total:,.0f} | {rate:,.0f} steps/s | ETA {eta:,.0f} s | "
                f"ε {float(np.mean(metrics['epsilon'][..., -1])):.3f} | greedy return {ret:.3f}")
        if self.enabled:
            sys.stderr.write("\r" + line[:160].ljust(120))
            sys.stderr.flush()
        elif self.plain and now - self.last_plain > 10:  # not a terminal: a line every 10 s
            print(line, flush=True)
            self.last_plain = now

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


def run_training(make_train: Callable, config: Dict[str, Any], env, seed: int, num_seeds: int,
                 progress: bool = True, watchdog_timeout: float = 600.0,
                 on_chunk: Optional[Callable[..., None]] = None,
                 resume_from: Optional[Callable[[Any], Tuple[Any, int]]] = None, on_built=None,
                 hparams: Any = None, shard: bool = True):
    """Train ``num_seeds`` seeds (vmapped; one run unbatched) in chunks of updates.

    ``hparams`` ({key: (R,) values}, or a function returning them, called after ``on_built``; HYP_TUNE)
    gives each of R runs its own traced hyperparameters
    (purejaxql.tuning.TRACEABLE); run r uses seed r % num_seeds. With several local devices the runs are
    sharded over them (``shard``). The carried state is ``{"runner": runner state, "hp": hparams}``.

    ``on_built(train_config)`` runs once the config is checked (before compiling); ``on_chunk(state,
    metrics, params_finite, updates_done)`` after each chunk (metrics (R, chunk) numpy arrays,
    params_finite (R,)); ``resume_from(state_template) -> (state, updates_done)`` replaces the initial
    state. Returns (state, metrics of this process's chunks (R, U), timings, resolved config)."""
    import jax
    import jax.numpy as jnp

    if num_seeds < 1:
        raise ConfigError(f"NUM_SEEDS must be >= 1, got {num_seeds}")
    train = make_train(config, env)
    cfg = train.config
    if on_built is not None:
        on_built(cfg)
    hparams = hparams() if callable(hparams) else hparams
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()}
    n_runs = len(next(iter(hp.values()))) if hp else num_seeds
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    rngs = jnp.tile(keys, (n_runs // num_seeds, 1))
    n_updates, c = cfg["NUM_UPDATES"], chunk_size(cfg["NUM_UPDATES"])

    def program(h):  # the training program with traced hyperparameters h in its config
        return make_train({**config, **h}, env) if h else train

    def init_one(k, h):
        return {"runner": program(h).init(k), "hp": h}

    def run_one(state, u):
        runner, metrics = program(state["hp"]).run(state["runner"], u)
        return {"runner": runner, "hp": state["hp"]}, metrics

    def params_finite(state):  # (R,): every parameter of the run is finite
        leaves = jax.tree.leaves(state["runner"].train.params)
        return jnp.stack([jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in leaves]).all(0)

    if n_runs > 1:
        init, run_all = jax.vmap(init_one), jax.vmap(run_one, in_axes=(0, None))
    else:  # one run goes unbatched (a vmap axis of size 1 makes XLA:CPU pick slower kernels)
        def init(k, h):
            return jax.tree.map(lambda x: x[None], init_one(k[0], jax.tree.map(lambda x: x[0], h)))

        def run_all(state, u):
            return jax.tree.map(lambda x: x[None], run_one(jax.tree.map(lambda x: x[0], state), u))

    def chunk(state, update_indices):
        state, metrics = run_all(state, update_indices)
        return state, metrics, params_finite(state)

    multi = jax.process_count() > 1  # DISTRIBUTED over several hosts: arrays span processes

    def fetch(x):  # device arrays -> numpy on this host (all processes gather when there are several)
        if multi:
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
        return jax.tree.map(np.asarray, x)

    runs, replicated = run_shardings(n_runs if shard else 1)
    jit_init = jax.jit(init, out_shardings=runs)
    jit_chunk = jax.jit(chunk, donate_argnums=0, in_shardings=(runs, replicated), out_shardings=runs)
    t0 = time.time()
    if resume_from is None:
        # host (numpy) inputs: the same values on every process, placed by the program's sharding
        state, start = jit_init(np.asarray(rngs), jax.tree.map(np.asarray, hp)), 0
    else:
        state, start = resume_from(jax.eval_shape(init, rngs, hp))
        state = jax.device_put(state, runs)
    compiled = jit_chunk.lower(state, jnp.arange(c)).compile()
    compile_s = time.time() - t0
    bar = Progress(n_updates * cfg["NUM_ENVS"] * cfg["NUM_STEPS"], progress, start * cfg["NUM_ENVS"] * cfg["NUM_STEPS"])
    dog = Watchdog(watchdog_timeout)
    chunks: List[Dict[str, np.ndarray]] = []
    t1 = time.time()
    try:
        for begin in range(start, n_updates, c):
            tc = time.time()
            state, metrics, finite = compiled(state, jnp.arange(begin, begin + c))
            metrics, finite = fetch((metrics, finite))  # waits for the chunk
            dog.beat(time.time() - tc)
            chunks.append(metrics)
            bar.update(metrics, last=begin + c == n_updates)
            if on_chunk is not None:
                on_chunk(state, metrics, finite, begin + c)
            if _CHUNK_PAUSE:
                time.sleep(_CHUNK_PAUSE)
    finally:
        dog.stop()
        bar.close()
    run_s = time.time() - t1
    if multi:
        state = fetch(state)
    metrics = {k: np.concatenate([m[k] for m in chunks], axis=1) for k in chunks[0]} if chunks else {}
    steps = (n_updates - start) * cfg["NUM_ENVS"] * cfg["NUM_STEPS"] * n_runs
    return state, metrics, {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / max(run_s, 1e-9)}, cfg


def run_shardings(n_runs: int):
    """(sharding of arrays with a leading runs axis, replicated sharding): the runs split evenly over the
    devices (all hosts' with DISTRIBUTED) when there are several and they divide n_runs, else everything on
    the default device."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    n = len(devices) if len(devices) > 1 and n_runs % len(devices) == 0 else 1
    if jax.process_count() > 1 and n == 1:
        raise ConfigError(f"DISTRIBUTED: {n_runs} run(s) do not split evenly over {len(devices)} devices; "
                          "make NUM_SEEDS (x the HYP_TUNE configurations) a multiple of the device count")
    mesh = Mesh(np.array(devices[:n]), ("runs",))
    return NamedSharding(mesh, PartitionSpec("runs")), NamedSharding(mesh, PartitionSpec())


# Fault-injection hook for the resume tests: seconds to sleep after each chunk (0 = none).
_CHUNK_PAUSE = float(os.environ.get("PUREJAXQL_CHUNK_PAUSE", "0") or 0)


def summarise(metrics: Dict[str, np.ndarray], timings: Dict[str, float], alg: str, env_name: str) -> str:
    final = metrics["test_returned_episode_returns"][:, -1]
    std = metrics["test_returned_episode_returns_std"][:, -1]
    lines = [f"{alg} on {env_name}: final greedy team return {np.nanmean(final):.3f} ± "
             f"{np.nanstd(final):.3f} over {len(final)} seed(s)"]
    for i, (m, s) in enumerate(zip(final, std)):
        won = metrics.get("test_returned_won_episode")
        extra = f", win rate {won[i, -1]:.3f}" if won is not None else ""
        lines.append(f"  seed {i}: greedy return {m:.3f} ± {s:.3f} (over test episodes){extra}")
    prefix = "test_returned_episode_returns_"
    for k in sorted(k for k in metrics if k.startswith(prefix) and k != prefix + "std"):
        who = k[len(prefix):]
        who = f"team {who[5:]}" if who.startswith("team_") else f"agent {who}"
        lines.append(f"  {who}: greedy return {np.nanmean(metrics[k][:, -1]):.3f} (mean over seeds)")
    lines.append(f"  wall {timings['compile_s'] + timings['run_s']:.1f} s: compile {timings['compile_s']:.1f} s, "
                 f"train {timings['run_s']:.1f} s, "
                 f"{timings['steps_per_s']:,.0f} env steps/s (all seeds)")
    return "\n".join(lines)


def _wandb_logger(cfg: Dict[str, Any], alg: str, env_name: str):
    mode = cfg.get("WANDB_MODE", "disabled")
    if mode == "disabled":
        return None, None
    import wandb
    run = wandb.init(entity=cfg.get("ENTITY") or None, project=cfg.get("PROJECT", "purejaxql"),
                     tags=[alg.upper(), env_name], name=f"{alg}_{env_name}", config=cfg, mode=mode)
    all_seeds = bool(cfg.get("WANDB_LOG_ALL_SEEDS", False))

    def log(metrics):
        n_seeds, n = metrics["env_step"].shape
        for u in range(n):
            row = {k: float(np.nanmean(v[:, u])) if np.any(np.isfinite(v[:, u])) else float("nan")
                   for k, v in metrics.items()}
            if all_seeds:
                row.update({f"rng{s}/{k}": float(v[s, u]) for k, v in metrics.items() for s in range(n_seeds)})
            wandb.log(row, step=int(metrics["env_step"][0, u]))
    return log, run


def resolve_path(path: str) -> str:
    """``pkg:rel/path`` names a file shipped inside the purejaxql package; other paths are as given."""
    if str(path).startswith("pkg:"):
        from importlib.resources import files
        return str(files("purejaxql").joinpath(str(path)[4:]))
    return str(path)


def load_pretrained(cfg: Dict[str, Any], alg: str, env) -> Optional[Dict[str, Any]]:
    """PRETRAINED_AGENTS {agent: checkpoint path} -> {agent: network params} (None for other modules)."""
    from purejaxql.checkpoint import agent_params
    spec = cfg.get("PRETRAINED_AGENTS") or {}
    if not alg.endswith("_pretrained"):
        if spec:
            raise ConfigError(f"PRETRAINED_AGENTS is only read by the *_pretrained modules, not {alg}")
        return None
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{alg} needs PRETRAINED_AGENTS: {{agent_name: path/to.safetensors}} (got {spec!r})")
    for agent in spec:
        if agent not in env.agents:
            raise ConfigError(f"PRETRAINED_AGENTS names {agent!r}, which is not an agent of "
                              f"{cfg.get('ENV_NAME')} ({list(env.agents)})")
    return {agent: agent_params(resolve_path(path), agent) for agent, path in spec.items()}


def save_checkpoints(runner, train_cfg: Dict[str, Any], cfg: Dict[str, Any], alg: str, env_name: str,
                     env, metrics: Dict[str, np.ndarray], folder: Optional[Path] = None) -> List[str]:
    """Write each seed's final parameters (see purejaxql.checkpoint) as ``folder/seed<SEED>_<i>.safetensors``,
    or, without ``folder``, under SAVE_PATH as ``SAVE_PATH/<env>/<module>/seed<SEED>_<i>.safetensors``."""
    import jax
    from purejaxql.checkpoint import checkpoint_path, save_checkpoint
    from purejaxql.config import DERIVED_KEYS
    from purejaxql.loop import eval_key

    params = jax.tree.map(np.asarray, runner.train.params)
    seed, n_seeds = int(cfg.get("SEED", 0)), len(jax.tree.leaves(params)[0])
    keys = np.asarray(jax.vmap(lambda k: jax.random.key_data(eval_key(k, train_cfg["NUM_UPDATES"] - 1)))(
        runner.test_rng))
    module, variant = alg.split("_", 1)
    saved = []
    for i in range(n_seeds):
        info = {"module": alg, "algorithm": module, "variant": variant, "env": env_name,
                "agents": list(env.agents), "seed": seed, "seed_index": i, "num_seeds": n_seeds,
                "pretrained_agents": dict(cfg.get("PRETRAINED_AGENTS") or {}),
                "final_test_return": float(metrics["test_returned_episode_returns"][i, -1]),
                "final_eval_key": [int(x) for x in keys[i].ravel()],
                "config": {k: v for k, v in train_cfg.items() if k not in DERIVED_KEYS}}
        path = Path(folder) / f"seed{seed}_{i}.safetensors" if folder is not None else \
            checkpoint_path(cfg["SAVE_PATH"], env_name, alg, seed, i)
        saved.append(str(save_checkpoint(path, jax.tree.map(lambda x: x[i], params), info)))
    return saved


def evaluate_checkpoint(path: str, cfg: Dict[str, Any], alg: str) -> Dict[str, float]:
    """EVAL_ONLY: greedy evaluation of a checkpoint's agents, no training. Uses the checkpoint's config
    (env, network) with this run's TEST_NUM_ENVS / TEST_NUM_STEPS, and the key of the training run's
    final evaluation, so with the same test settings it reproduces that run's final greedy return."""
    import importlib

    import jax
    import jax.numpy as jnp
    from purejaxql.checkpoint import load_checkpoint

    params, info = load_checkpoint(resolve_path(path))
    module = info["module"]
    if module.split("_")[0] != alg.split("_")[0] or ("_ns" in module) != ("_ns" in alg):
        print(f"purejaxql: note: {path} was trained by {module}; evaluating it as such", file=sys.stderr)
    ckpt_cfg = dict(info["config"])
    for k in ("TEST_NUM_ENVS", "TEST_NUM_STEPS"):
        if cfg.get(k) is not None:
            ckpt_cfg[k] = cfg[k]
    env = make_env(ckpt_cfg)
    make_train = importlib.import_module(f"purejaxql.{module}").make_train
    pretrained = load_pretrained({**ckpt_cfg, "PRETRAINED_AGENTS": info.get("pretrained_agents")}, module, env)
    train = make_train(ckpt_cfg, env, pretrained) if pretrained is not None else make_train(ckpt_cfg, env)
    agent = jax.tree.map(jnp.asarray, params["agent"])
    try:
        jax.eval_shape(train.evaluate, jax.random.PRNGKey(0), agent)
    except Exception as e:
        raise ConfigError(f"the parameters in {path} do not fit the network of its config ({e})") from None
    key = jax.random.wrap_key_data(jnp.asarray(info["final_eval_key"], jnp.uint32)) \
        if "final_eval_key" in info else jax.random.PRNGKey(int(cfg.get("SEED", 0)))
    out = {k: float(v) for k, v in jax.jit(train.evaluate)(key, agent).items()}
    env_name = info["env"]
    line = (f"{module} checkpoint {path} on {env_name}: greedy team return "
            f"{out['test_returned_episode_returns']:.3f} ± {out['test_returned_episode_returns_std']:.3f} "
            f"over {train.config['TEST_NUM_ENVS']} episodes")
    if train.env.has_won:
        line += f", win rate {out['test_returned_won_episode']:.3f}"
    print(line, flush=True)
    return out


def _with_pretrained(make_train: Callable, alg: str, cfg: Dict[str, Any], env) -> Callable:
    import functools
    pretrained = load_pretrained(cfg, alg, env)
    return make_train if pretrained is None else functools.partial(make_train, pretrained_agents=pretrained)


def _resume_point(folder: Path):
    """A run folder to resume -> (its config, its newest state checkpoint, that checkpoint's header)."""
    from purejaxql.run_folder import latest_state, read_config, state_header
    if not folder.is_dir():
        raise ConfigError(f"RESUME={folder}: no such folder")
    saved = read_config(folder)
    path = latest_state(folder)
    if path is None:
        raise ConfigError(f"RESUME={folder}: the folder holds no training-state checkpoint "
                          "(checkpoints/state_u*.safetensors, saved every CHECKPOINT_INTERVAL)")
    return saved, path, state_header(path)


def _resume_config(make_train: Callable, alg: str, top: Dict[str, Any], alg_cfg: Dict[str, Any],
                   overrides: List[str]):
    """RESUME=<run folder>: the run's saved config, with the result-neutral run keys of this command line
    (PROGRESS, WATCHDOG_TIMEOUT, WANDB_*, CHECKPOINT_*, ...). Keys the command line sets that would change
    results are refused by name. -> (run keys, alg keys, state checkpoint to load)."""
    from purejaxql.config import DERIVED_KEYS
    from purejaxql.run_folder import RESULT_NEUTRAL_KEYS, config_differences

    folder = Path(str(top["RESUME"]))
    saved, path, header = _resume_point(folder)
    if header.get("module") != alg:
        raise ConfigError(f"RESUME={folder}: that run was trained by {header.get('module')}; resume it with "
                          f"python -m purejaxql.{header.get('module')} RESUME={folder}")
    keys: List[str] = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "alg":  # a whole alg config: every key counts
            keys += [f"alg.{k}" for k in sorted(set(saved["alg"]) | set(alg_cfg))]
        elif key != "RESUME" and not key.startswith("hydra"):
            keys.append(key)
    now: Dict[str, Any] = dict(top)
    if any(k.startswith("alg.") for k in keys):  # compare resolved values (defaults filled in)
        env = make_env(alg_cfg)
        resolved = _with_pretrained(make_train, alg, alg_cfg, env)(alg_cfg, env).config
        now["alg"] = {k: v for k, v in resolved.items() if k not in DERIVED_KEYS}
    diffs = config_differences(saved, now, keys)
    if diffs:
        raise ConfigError(f"RESUME={folder}: the command line changes what the run computes: " + "; ".join(diffs)
                          + ". Resume with the run's own config (leave these out) or start a new run.")
    run_keys = {k: v for k, v in saved.items() if k != "alg"}
    run_keys.update({k: v for k, v in top.items() if k in RESULT_NEUTRAL_KEYS})
    return run_keys, dict(saved["alg"]), path


def tune_grid(train_cfg: Dict[str, Any], env, alg: str):
    """HYP_TUNE: the TUNE block's traceable grid -> (keys, points), each point checked like a config."""
    from purejaxql.config import resolve_config
    from purejaxql.tuning import expand, split_structural

    traced, structural = split_structural(train_cfg.get("TUNE") or {})
    if structural:
        raise ConfigError(f"TUNE keys {sorted(structural)} change the program's shapes: sweep them with hydra "
                          "multirun (python -m purejaxql.<module> ... HYP_TUNE=True does it, without -m)")
    if not train_cfg["TEST_DURING_TRAINING"]:
        raise ConfigError("HYP_TUNE ranks configurations by their final greedy return: TEST_DURING_TRAINING "
                          "must be True")
    # no traceable key left: this structure (one job of the CLI's multirun) is one configuration
    keys, points = expand(traced) if traced else ([], [{}])
    for p in points:
        try:
            resolve_config({**train_cfg, **p}, train_cfg, env, alg)
        except ConfigError as e:
            raise ConfigError(f"TUNE grid point {p}: {e}") from None
    return keys, points


def report_tune(run_dir: Path, tune, history: Dict[str, np.ndarray], num_seeds: int, title: str) -> Dict[str, Any]:
    """tune.csv, tune_plot.png and the printed ranking; -> the best configuration's row."""
    from purejaxql.tuning import rank, save_tune_plot, table_text, write_table
    keys, points = tune
    won = history.get("test_returned_won_episode")
    from purejaxql.run_folder import non_finite_while_learning
    diverged = np.any(non_finite_while_learning(history, "loss") | non_finite_while_learning(history, "qvals"),
                      axis=1)
    rows = rank(points, history["test_returned_episode_returns"][:, -1], num_seeds,
                None if won is None else won[:, -1], diverged)
    write_table(run_dir / "tune.csv", rows)
    if keys:
        save_tune_plot(run_dir / "tune_plot.png", rows, keys, title)
    print(f"{title}: HYP_TUNE, {len(points)} configurations x {num_seeds} seeds, ranked by final greedy return",
          flush=True)
    print(table_text(rows, keys), flush=True)
    return rows[0]


def _start_distributed(run_dir: Path, top: Dict[str, Any]):
    """DISTRIBUTED=True: join the other hosts' processes (jax.distributed.initialize reads the cluster
    from Slurm / Open MPI / the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID variables).
    Every process runs the same program over all hosts' devices; process 0 writes the run folder (the
    others write theirs under it, as process<k>/). State checkpoints and RESUME are single-host only."""
    import jax
    if top.get("RESUME"):
        raise ConfigError("RESUME is single-host: it does not combine with DISTRIBUTED=True")
    jax.distributed.initialize()
    k = jax.process_index()
    print(f"purejaxql: process {k} of {jax.process_count()}, {len(jax.devices())} devices in all", flush=True)
    return (run_dir if k == 0 else run_dir / f"process{k}"), {**top, "CHECKPOINT_INTERVAL": 0}


def checkpoint_every(value: Any, num_updates: int) -> int:
    """CHECKPOINT_INTERVAL -> updates between state checkpoints: a fraction (< 1) of training or a number
    of updates (>= 1); 0 = none."""
    v = float(value or 0)
    return 0 if v == 0 else max(1, round(v * num_updates)) if v < 1 else int(v)


def run_summary(history: Dict[str, np.ndarray], timings: Dict[str, float], alg: str, env_name: str,
                run_keys: Dict[str, Any], train_cfg: Dict[str, Any], status: str,
                resumed_from: Optional[str]) -> Dict[str, Any]:
    """What summary.json holds."""
    import jax
    from purejaxql.run_folder import versions

    ret, std = history["test_returned_episode_returns"][:, -1], history["test_returned_episode_returns_std"][:, -1]
    won = history.get("test_returned_won_episode")
    seeds = []
    for i in range(len(ret)):
        row = {"seed_index": i, "greedy_return": ret[i], "greedy_return_std_over_episodes": std[i],
               "training_return": history["returned_episode_returns"][i, -1]}
        if won is not None:
            row["win_rate"] = won[i, -1]
        seeds.append(row)
    out = {"status": status, "module": alg, "env": env_name, "seed": run_keys.get("SEED", 0),
           "num_seeds": len(ret), "updates_done": int(history["update_steps"][0, -1]),
           "num_updates": train_cfg["NUM_UPDATES"], "env_steps": int(history["env_step"][0, -1]),
           "final_greedy_return": {"mean": np.nanmean(ret), "std": np.nanstd(ret)}}
    if won is not None:
        out["final_win_rate"] = {"mean": np.nanmean(won[:, -1]), "std": np.nanstd(won[:, -1])}
    out.update({"seeds": seeds, "wall_time_s": timings["compile_s"] + timings["run_s"],
                "compile_time_s": timings["compile_s"], "train_time_s": timings["run_s"],
                "env_steps_per_s": timings["steps_per_s"], "resumed_from": resumed_from,
                "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
                "versions": versions()})
    return out


def main_from_cfg(make_train: Callable, alg: str, top: Dict[str, Any], alg_cfg: Dict[str, Any],
                  run_dir: Path, overrides: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Run one training job: run keys ``top`` (config/config.yaml), algorithm keys ``alg_cfg``, the run
    folder ``run_dir``; ``overrides`` are the command line's (compared against the run when resuming)."""
    from purejaxql.config import DERIVED_KEYS, check_run_keys
    from purejaxql.run_folder import Recorder, TrainingStopped, write_config, write_json

    if top.get("EVAL_ONLY"):
        return evaluate_checkpoint(str(top["EVAL_ONLY"]), {**top, **alg_cfg}, alg)
    check_run_keys(top)
    if top.get("DISTRIBUTED"):
        run_dir, top = _start_distributed(run_dir, top)
    state_path = None
    if top.get("RESUME"):
        top, alg_cfg, state_path = _resume_config(make_train, alg, top, alg_cfg, list(overrides or []))
        run_dir = Path(str(top["RESUME"]))
    cfg = {**top, **alg_cfg}
    env = make_env(cfg)
    env_name = cfg["ENV_NAME"] + (f"_{cfg['MAP_NAME']}" if "SMAX" in cfg["ENV_NAME"] else "")
    make_train = _with_pretrained(make_train, alg, cfg, env)
    run_keys = {k: v for k, v in top.items() if k not in ("RESUME", "EVAL_ONLY")}
    num_seeds = int(top.get("TUNE_NUM_SEEDS", 4) if top.get("HYP_TUNE") else top.get("NUM_SEEDS", 1))
    state: Dict[str, Any] = {"tune": None}

    def on_built(train_cfg):  # the config is valid: the run folder starts here
        saved_alg = {k: v for k, v in train_cfg.items() if k not in DERIVED_KEYS}
        index = None
        if top.get("HYP_TUNE"):
            state["tune"] = tune_grid(train_cfg, env, alg)
            n_configs = len(state["tune"][1])
            index = {"config": np.repeat(np.arange(n_configs), num_seeds),
                     "seed_index": np.tile(np.arange(num_seeds), n_configs)}
        if state_path is None:
            write_config(run_dir, run_keys, saved_alg)
        header = {"module": alg, "env": env_name, "config": {**run_keys, "alg": saved_alg}}
        state["recorder"] = Recorder(
            run_dir, train_cfg["NUM_UPDATES"], checkpoint_every(top.get("CHECKPOINT_INTERVAL"),
                                                                train_cfg["NUM_UPDATES"]),
            int(top.get("CHECKPOINT_KEEP", 2)),
            bool(top.get("NAN_CHECK", True)) and state["tune"] is None,  # a diverging grid point is a result
            header, f"{alg} on {env_name}", index)
        state["log"], state["wandb"] = _wandb_logger(cfg, alg, env_name)
        verb = f"resuming {run_dir} from {state_path.name}" if state_path else "compiling"
        what = f"{num_seeds} seed(s)" if state["tune"] is None else \
            f"HYP_TUNE: {len(state['tune'][1])} configurations x {num_seeds} seeds in one program"
        print(f"purejaxql: {alg} on {env_name}, {what}; {verb}...", flush=True)

    def hparams():
        from purejaxql.tuning import grid_arrays
        return None if state["tune"] is None else grid_arrays(state["tune"][1], num_seeds)

    def on_chunk(runner, metrics, finite, updates_done):
        state["recorder"].chunk(runner, metrics, finite, updates_done)
        if state["log"] is not None:
            state["log"](metrics)

    def resume_from(template):
        return state["recorder"].resume(state_path, template)

    t0 = time.time()
    try:
        final, _, timings, train_cfg = run_training(
            make_train, alg_cfg, env, int(cfg.get("SEED", 0)), num_seeds,
            progress=bool(cfg.get("PROGRESS", True)), watchdog_timeout=float(cfg.get("WATCHDOG_TIMEOUT", 600)),
            on_chunk=on_chunk, resume_from=resume_from if state_path else None, on_built=on_built,
            hparams=hparams)
    except TrainingStopped as e:
        rec = state["recorder"]
        rec.plots()
        elapsed = {"compile_s": float("nan"), "run_s": time.time() - t0, "steps_per_s": float("nan")}
        write_json(run_dir / "summary.json", run_summary(rec.history(), elapsed, alg, env_name, run_keys,
                                                         {"NUM_UPDATES": rec.num_updates}, f"stopped: {e}",
                                                         str(state_path) if state_path else None))
        raise
    rec = state["recorder"]
    history, runner = rec.history(), final["runner"]
    tune = None
    if state["tune"] is not None:  # rank the configurations; the summary and checkpoints are the best one's
        import jax
        best = report_tune(run_dir, state["tune"], history, num_seeds, f"{alg} on {env_name}")
        tune = {"keys": state["tune"][0], "configurations": len(state["tune"][1]), "best": best}
        runs = np.arange(best["config"] * num_seeds, (best["config"] + 1) * num_seeds)
        runner = jax.tree.map(lambda x: x[runs], runner)
        history = {k: v[runs] for k, v in history.items()}
        train_cfg = {**train_cfg, **{k: best[k] for k in state["tune"][0]}}
        print(f"  best configuration {best['config']}: " + ", ".join(f"{k}={best[k]:g}" for k in state["tune"][0]),
              flush=True)
    else:
        print(summarise(history, timings, alg, env_name), flush=True)
    summary = run_summary(history, timings, alg, env_name, run_keys, train_cfg, "finished",
                          str(state_path) if state_path else None)
    if tune is not None:
        summary["tune"] = tune
    saved = save_checkpoints(runner, train_cfg, cfg, alg, env_name, env, history, run_dir / "checkpoints")
    if cfg.get("SAVE_PATH"):
        saved += save_checkpoints(runner, train_cfg, cfg, alg, env_name, env, history)
    rec.plots()
    write_json(run_dir / "summary.json", summary)
    for path in saved:
        print(f"  saved {path}", flush=True)
    print(f"  run folder: {run_dir} (config.yaml, metrics.csv, summary.json, training_plots.png, checkpoints/)",
          flush=True)
    if state["wandb"] is not None:
        state["wandb"].finish()
    return history


def _precheck_keys(argv: List[str], alg: str):
    """Catch an unknown key on the command line before hydra starts (and creates a run folder)."""
    from purejaxql.config import KEY_OWNERS, PQN_DEFAULTS, Q_LEARNING_DEFAULTS, QMIX_DEFAULTS, RUN_KEYS, unknown_key

    alg_keys = set(Q_LEARNING_DEFAULTS) | set(PQN_DEFAULTS) | set(QMIX_DEFAULTS) | set(KEY_OWNERS) | RUN_KEYS
    for arg in argv:
        m = re.match(r"^[+~]*(alg\.)?([A-Za-z_][A-Za-z0-9_]*)(?:\.\S*)?=", arg)
        if not m or arg.startswith(("hydra", "+hydra")):
            continue
        key, in_alg = m.group(2), bool(m.group(1))
        if not in_alg and key in ("alg", "hydra"):
            continue
        if not in_alg and key not in RUN_KEYS and key in alg_keys:
            raise ConfigError(f"{key} is an algorithm key: set it as alg.{key}=...")
        known = alg_keys if in_alg else RUN_KEYS
        if key not in known:
            raise unknown_key(key, known, alg) if in_alg else \
                unknown_key(key, known, None, "unknown run key {key!r}{hint} (algorithm keys are set as alg.KEY=...)")


def _remove_unused_run_dir(run_dir: Path):
    """A user error before the run wrote anything: remove the folder hydra made for it (only hydra's own
    files inside) and the empty folders above it inside the working directory."""
    import shutil
    try:
        cwd = Path.cwd().resolve()
        if run_dir.resolve() == cwd or run_dir.resolve() in cwd.parents:
            return  # never the working directory or a folder around it
        if any(p.name != ".hydra" and not p.name.endswith(".log") for p in run_dir.iterdir()):
            return
        shutil.rmtree(run_dir)
        parent = run_dir.resolve().parent
        while parent != cwd and cwd in parent.parents:
            parent.rmdir()  # OSError when not empty: stop there
            parent = parent.parent
    except OSError:
        pass


def cli(make_train: Callable, alg: str, argv: Optional[List[str]] = None):
    """Entry point of ``python -m purejaxql.<alg>``: hydra overrides from the command line. User errors
    print one message and exit 2; a run stopped by NAN_CHECK or a full disk exits 4; real bugs show their
    traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # a bug in purejaxql shows its whole traceback
    # hydra's logging set-up lets JAX's INFO lines through ("Unable to initialize backend 'tpu'" on every
    # start without a TPU); JAX's warnings and errors still show
    import logging
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    user_overrides = [a for a in argv if not a.startswith("-")]
    names = available_algs()

    def fail(message: str, code: int = 2):
        print(f"purejaxql: error: {message}", file=sys.stderr)
        sys.exit(code)

    chosen = [a for a in argv if a.startswith(("+alg=", "alg="))]
    if not chosen:
        default = f"{alg.split('_')[0]}_mpe" + ("_tag_pretrained" if alg.endswith("_pretrained") else "")
        if not any(a.startswith("RESUME=") for a in argv):
            print(f"purejaxql: no +alg given, using +alg={default} (available: {', '.join(names)})", flush=True)
        argv.append(f"+alg={default}")
    else:
        name = chosen[0].split("=", 1)[1]
        if name not in names:
            fail(f"unknown +alg={name}; available: {', '.join(names)}")
        if name.split("_")[0] != alg.split("_")[0]:
            print(f"purejaxql: warning: running {alg} with the {name} config", file=sys.stderr)
    try:
        _precheck_keys(argv, alg)
    except ConfigError as e:
        fail(str(e))
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("RESUME=")]
    if resume and resume[-1] not in ("", "null"):
        if "-m" in argv or "--multirun" in argv:
            fail("RESUME resumes one run; it does not combine with --multirun")
        try:  # before hydra touches the folder
            _resume_point(Path(resume[-1]))
        except ConfigError as e:
            fail(str(e))
        # the run continues in its own folder; hydra adds nothing to it (no .hydra/, no log file)
        argv += [f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null", "hydra/job_logging=none",
                 "hydra/hydra_logging=none"]
    sweep = None
    tuning = any(re.match(r"^\+*HYP_TUNE=(true|True)$", a) for a in argv)
    if tuning and not ({"-m", "--multirun"} & set(argv)) and not resume:
        try:
            structural = _structural_tune(argv)
        except ConfigError as e:
            fail(str(e))
        if structural:  # one compile per structure: hydra multirun over these keys
            sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")),
                         time.strftime("multirun/%Y-%m-%d/%H-%M-%S"))
            argv = ["-m", *argv, f"hydra.sweep.dir={sweep}"]
            argv += [f"++alg.{k}={','.join('null' if v is None else str(v) for v in vals)}"
                     for k, vals in structural.items()]
            argv += [f"~alg.TUNE.{k}" for k in structural]
            print(f"purejaxql: HYP_TUNE: {', '.join(structural)} change the program's shapes: hydra multirun over "
                  f"them, one compile each, in {sweep}/", flush=True)
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from purejaxql.run_folder import TrainingStopped

    @hydra.main(version_base="1.3", config_path="pkg://" + CONFIG_PACKAGE, config_name="config")
    def _main(cfg):
        flat = OmegaConf.to_container(cfg, resolve=True)
        top, alg_cfg = {k: v for k, v in flat.items() if k != "alg"}, flat.get("alg", {})
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            clash = sorted(set(top) & set(alg_cfg))
            if clash:
                raise ConfigError(f"{clash[0]} is an algorithm key: set it as alg.{clash[0]}=...")
            main_from_cfg(make_train, alg, top, alg_cfg, run_dir, user_overrides)
        except ConfigError as e:
            if not top.get("RESUME"):
                _remove_unused_run_dir(run_dir)
            fail(str(e))
        except TrainingStopped as e:
            fail(f"training stopped: {e}", code=4)

    sys.argv = [sys.argv[0]] + argv
    _main()
    if sweep is not None:
        combine_tune(Path(sweep), list(structural), alg)


def _structural_tune(argv: List[str]) -> Dict[str, List[Any]]:
    """The TUNE block of the config this command line composes -> {structural key: values}."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from purejaxql.tuning import split_structural

    overrides = [a for a in argv if ("=" in a or a.startswith("~")) and not a.startswith(("-", "hydra.", "hydra/",
                                                                                          "+hydra"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        tune = OmegaConf.to_container(cfg, resolve=True).get("alg", {}).get("TUNE") or {}
    finally:
        GlobalHydra.instance().clear()
    if not tune:
        raise ConfigError("HYP_TUNE=True needs a TUNE block in the alg config (key: [values] or "
                          "{min, max, num, log}), e.g. '+alg.TUNE.LR=[0.001,0.005]'")
    return split_structural(tune)[1]


def combine_tune(sweep: Path, structural: List[str], alg: str):
    """After a HYP_TUNE multirun: every job's tune.csv ranked together in ``sweep``/tune.csv (+ plot)."""
    import yaml
    from purejaxql.tuning import rank_order, read_table, save_tune_plot, table_text, write_table

    rows, keys = [], None
    for job in sorted((p for p in sweep.iterdir() if p.is_dir() and (p / "tune.csv").is_file()),
                      key=lambda p: int(p.name) if p.name.isdigit() else 0):
        alg_cfg = yaml.safe_load((job / "config.yaml").read_text())["alg"]
        keys = keys or structural + list(alg_cfg.get("TUNE") or {})  # the job's TUNE: the traced keys
        for r in read_table(job / "tune.csv"):
            r.pop("rank")
            rows.append({"config": f"{job.name}/{r['config']}", **{k: alg_cfg[k] for k in structural},
                         **{k: v for k, v in r.items() if k != "config"}})
    if not rows:
        return
    rows.sort(key=rank_order)
    write_table(sweep / "tune.csv", rows)
    save_tune_plot(sweep / "tune_plot.png", rows, keys, f"{alg}: HYP_TUNE")
    print(f"{alg}: HYP_TUNE over {len(rows)} configurations (job/config), ranked by final greedy return:")
    print(table_text(rows, keys), flush=True)
    print(f"  {sweep}/tune.csv, {sweep}/tune_plot.png", flush=True)
