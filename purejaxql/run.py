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


def make_env(cfg: Dict[str, Any]):
    """Build the JaxMARL env named by ENV_NAME (+ MAP_NAME for SMAX, ENV_KWARGS)."""
    import jaxmarl
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
    """Largest divisor of num_updates not above num_updates / target_chunks (so one compile serves all)."""
    limit = max(1, num_updates // target_chunks)
    return max(d for d in range(1, limit + 1) if num_updates % d == 0)


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
                 resume_from: Optional[Callable[[Any], Tuple[Any, int]]] = None, on_built=None):
    """Train ``num_seeds`` seeds (vmapped; one seed unbatched) in chunks of updates.

    ``on_built(train_config)`` runs once the config is checked (before compiling); ``on_chunk(runner,
    metrics, params_finite, updates_done)`` after each chunk (metrics (S, chunk) numpy arrays,
    params_finite (S,)); ``resume_from(state_template) -> (runner, updates_done)`` replaces the initial
    state. Returns (runner_state, metrics of this process's chunks (S, U), timings, resolved config)."""
    import jax
    import jax.numpy as jnp

    if num_seeds < 1:
        raise ConfigError(f"NUM_SEEDS must be >= 1, got {num_seeds}")
    train = make_train(config, env)
    cfg = train.config
    if on_built is not None:
        on_built(cfg)
    rngs = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    n_updates, c = cfg["NUM_UPDATES"], chunk_size(cfg["NUM_UPDATES"])

    def params_finite(runner):  # (S,): every parameter of the seed is finite
        leaves = jax.tree.leaves(runner.train.params)
        return jnp.stack([jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in leaves]).all(0)

    if num_seeds > 1:
        init = jax.vmap(train.init)
        run_seeds = jax.vmap(train.run, in_axes=(0, None))
    else:  # one seed runs unbatched (a vmap axis of size 1 makes XLA:CPU pick slower kernels)
        def init(k):
            return jax.tree.map(lambda x: x[None], train.init(k[0]))

        def run_seeds(r, u):
            return jax.tree.map(lambda x: x[None], train.run(jax.tree.map(lambda x: x[0], r), u))

    def chunk(runner, update_indices):
        runner, metrics = run_seeds(runner, update_indices)
        return runner, metrics, params_finite(runner)

    t0 = time.time()
    if resume_from is None:
        runner, start = jax.jit(init)(rngs), 0
    else:
        runner, start = resume_from(jax.eval_shape(init, rngs))
    compiled = jax.jit(chunk, donate_argnums=0).lower(runner, jnp.arange(c)).compile()
    compile_s = time.time() - t0
    bar = Progress(n_updates * cfg["NUM_ENVS"] * cfg["NUM_STEPS"], progress, start * cfg["NUM_ENVS"] * cfg["NUM_STEPS"])
    dog = Watchdog(watchdog_timeout)
    chunks: List[Dict[str, np.ndarray]] = []
    t1 = time.time()
    try:
        for begin in range(start, n_updates, c):
            tc = time.time()
            runner, metrics, finite = compiled(runner, jnp.arange(begin, begin + c))
            metrics = jax.tree.map(np.asarray, metrics)  # waits for the chunk
            dog.beat(time.time() - tc)
            chunks.append(metrics)
            bar.update(metrics, last=begin + c == n_updates)
            if on_chunk is not None:
                on_chunk(runner, metrics, np.asarray(finite), begin + c)
            if _CHUNK_PAUSE:
                time.sleep(_CHUNK_PAUSE)
    finally:
        dog.stop()
        bar.close()
    run_s = time.time() - t1
    metrics = {k: np.concatenate([m[k] for m in chunks], axis=1) for k in chunks[0]} if chunks else {}
    steps = (n_updates - start) * cfg["NUM_ENVS"] * cfg["NUM_STEPS"] * num_seeds
    return runner, metrics, {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / max(run_s, 1e-9)}, cfg


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

    seed, n_seeds = int(cfg.get("SEED", 0)), int(cfg.get("NUM_SEEDS", 1))
    params = jax.tree.map(np.asarray, runner.train.params)
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
    state_path = None
    if top.get("RESUME"):
        top, alg_cfg, state_path = _resume_config(make_train, alg, top, alg_cfg, list(overrides or []))
        run_dir = Path(str(top["RESUME"]))
    cfg = {**top, **alg_cfg}
    env = make_env(cfg)
    env_name = cfg["ENV_NAME"] + (f"_{cfg['MAP_NAME']}" if "SMAX" in cfg["ENV_NAME"] else "")
    make_train = _with_pretrained(make_train, alg, cfg, env)
    run_keys = {k: v for k, v in top.items() if k not in ("RESUME", "EVAL_ONLY")}
    state: Dict[str, Any] = {}

    def on_built(train_cfg):  # the config is valid: the run folder starts here
        saved_alg = {k: v for k, v in train_cfg.items() if k not in DERIVED_KEYS}
        if state_path is None:
            write_config(run_dir, run_keys, saved_alg)
        header = {"module": alg, "env": env_name, "config": {**run_keys, "alg": saved_alg}}
        state["recorder"] = Recorder(
            run_dir, train_cfg["NUM_UPDATES"], checkpoint_every(top.get("CHECKPOINT_INTERVAL"),
                                                                train_cfg["NUM_UPDATES"]),
            int(top.get("CHECKPOINT_KEEP", 2)), bool(top.get("NAN_CHECK", True)), header, f"{alg} on {env_name}")
        state["log"], state["wandb"] = _wandb_logger(cfg, alg, env_name)
        verb = f"resuming {run_dir} from {state_path.name}" if state_path else "compiling"
        print(f"purejaxql: {alg} on {env_name}, {cfg.get('NUM_SEEDS', 1)} seed(s); {verb}...", flush=True)

    def on_chunk(runner, metrics, finite, updates_done):
        state["recorder"].chunk(runner, metrics, finite, updates_done)
        if state["log"] is not None:
            state["log"](metrics)

    def resume_from(template):
        return state["recorder"].resume(state_path, template)

    t0 = time.time()
    try:
        runner, _, timings, train_cfg = run_training(
            make_train, alg_cfg, env, int(cfg.get("SEED", 0)), int(cfg.get("NUM_SEEDS", 1)),
            progress=bool(cfg.get("PROGRESS", True)), watchdog_timeout=float(cfg.get("WATCHDOG_TIMEOUT", 600)),
            on_chunk=on_chunk, resume_from=resume_from if state_path else None, on_built=on_built)
    except TrainingStopped as e:
        rec = state["recorder"]
        rec.plots()
        elapsed = {"compile_s": float("nan"), "run_s": time.time() - t0, "steps_per_s": float("nan")}
        write_json(run_dir / "summary.json", run_summary(rec.history(), elapsed, alg, env_name, run_keys,
                                                         {"NUM_UPDATES": rec.num_updates}, f"stopped: {e}",
                                                         str(state_path) if state_path else None))
        raise
    rec = state["recorder"]
    history = rec.history()
    print(summarise(history, timings, alg, env_name), flush=True)
    saved = save_checkpoints(runner, train_cfg, cfg, alg, env_name, env, history, run_dir / "checkpoints")
    if cfg.get("SAVE_PATH"):
        saved += save_checkpoints(runner, train_cfg, cfg, alg, env_name, env, history)
    rec.plots()
    write_json(run_dir / "summary.json", run_summary(history, timings, alg, env_name, run_keys, train_cfg,
                                                     "finished", str(state_path) if state_path else None))
    for path in saved:
        print(f"  saved {path}", flush=True)
    print(f"  run folder: {run_dir} (config.yaml, metrics.csv, summary.json, training_plots.png, checkpoints/)",
          flush=True)
    if state["wandb"] is not None:
        state["wandb"].finish()
    return history


def _precheck_keys(argv: List[str], alg: str):
    """Catch an unknown key on the command line before hydra starts (and creates a run folder)."""
    import difflib
    from purejaxql.config import KEY_OWNERS, PQN_DEFAULTS, Q_LEARNING_DEFAULTS, QMIX_DEFAULTS, RUN_KEYS

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
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r} for {alg}{hint}" if in_alg else
                              f"unknown run key {key!r}{hint} (algorithm keys are set as alg.KEY=...)")


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
    print one message and exit 2; a run stopped by NAN_CHECK exits 4; real bugs show their traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # a bug in purejaxql shows its whole traceback
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
