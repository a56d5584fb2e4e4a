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
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

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

    def __init__(self, total_steps: float, enabled: bool = True):
        self.total, self.enabled, self.start = total_steps, enabled and sys.stderr.isatty(), (time.time(), 0.0)
        self.plain = enabled and not self.enabled
        self.last_plain = 0.0

    def update(self, metrics: Dict[str, np.ndarray]):
        now = time.time()
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
                 on_metrics: Optional[Callable[[Dict[str, np.ndarray]], None]] = None):
    """Train ``num_seeds`` seeds (vmapped) in chunks. Returns (runner_state, metrics, timings, resolved
    config);
    metrics arrays have shape (num_seeds, NUM_UPDATES)."""
    import jax
    import jax.numpy as jnp

    if num_seeds < 1:
        raise ConfigError(f"NUM_SEEDS must be >= 1, got {num_seeds}")
    train = make_train(config, env)
    cfg = train.config
    rngs = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    n_updates, c = cfg["NUM_UPDATES"], chunk_size(cfg["NUM_UPDATES"])
    if num_seeds > 1:
        init = jax.jit(jax.vmap(train.init))
        run = jax.jit(jax.vmap(train.run, in_axes=(0, None)), donate_argnums=0)
    else:  # one seed runs unbatched (a vmap axis of size 1 makes XLA:CPU pick slower kernels)
        def one(f):
            return lambda *a: jax.tree.map(lambda x: x[None], f(*a))
        init = jax.jit(lambda k: one(train.init)(k[0]))
        run = jax.jit(lambda r, u: one(train.run)(jax.tree.map(lambda x: x[0], r), u), donate_argnums=0)

    t0 = time.time()
    runner = init(rngs)
    compiled = run.lower(runner, jnp.arange(c)).compile()
    compile_s = time.time() - t0
    bar, dog = Progress(cfg["NUM_UPDATES"] * cfg["NUM_ENVS"] * cfg["NUM_STEPS"], progress), Watchdog(watchdog_timeout)
    chunks: List[Dict[str, np.ndarray]] = []
    t1 = time.time()
    try:
        for start in range(0, n_updates, c):
            tc = time.time()
            runner, metrics = compiled(runner, jnp.arange(start, start + c))
            metrics = jax.tree.map(np.asarray, metrics)  # waits for the chunk
            dog.beat(time.time() - tc)
            chunks.append(metrics)
            bar.update(metrics)
            if on_metrics is not None:
                on_metrics(metrics)
    finally:
        dog.stop()
        bar.close()
    run_s = time.time() - t1
    metrics = {k: np.concatenate([m[k] for m in chunks], axis=1) for k in chunks[0]}
    steps = float(metrics["env_step"][0, -1]) * num_seeds
    return runner, metrics, {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / run_s}, cfg


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
                     env, metrics: Dict[str, np.ndarray]) -> List[str]:
    """Write each seed's final parameters under SAVE_PATH (see purejaxql.checkpoint)."""
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
        path = checkpoint_path(cfg["SAVE_PATH"], env_name, alg, seed, i)
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


def main_from_cfg(make_train: Callable, alg: str, cfg: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Run one training job from a flat config (alg keys + run keys)."""
    import functools

    if cfg.get("EVAL_ONLY"):
        return evaluate_checkpoint(str(cfg["EVAL_ONLY"]), cfg, alg)
    env = make_env(cfg)
    env_name = cfg["ENV_NAME"] + (f"_{cfg['MAP_NAME']}" if "SMAX" in cfg["ENV_NAME"] else "")
    alg_cfg = {k: v for k, v in cfg.items() if k != "alg"}
    pretrained = load_pretrained(cfg, alg, env)
    if pretrained is not None:
        make_train = functools.partial(make_train, pretrained_agents=pretrained)
    log, wb = _wandb_logger(cfg, alg, env_name)
    print(f"purejaxql: {alg} on {env_name}, {cfg.get('NUM_SEEDS', 1)} seed(s); compiling...", flush=True)
    runner, metrics, timings, train_cfg = run_training(
        make_train, alg_cfg, env, int(cfg.get("SEED", 0)), int(cfg.get("NUM_SEEDS", 1)),
        progress=bool(cfg.get("PROGRESS", True)), watchdog_timeout=float(cfg.get("WATCHDOG_TIMEOUT", 600)),
        on_metrics=log)
    print(summarise(metrics, timings, alg, env_name), flush=True)
    if cfg.get("SAVE_PATH"):
        for path in save_checkpoints(runner, train_cfg, cfg, alg, env_name, env, metrics):
            print(f"  saved {path}", flush=True)
    if wb is not None:
        wb.finish()
    return metrics


def cli(make_train: Callable, alg: str, argv: Optional[List[str]] = None):
    """Entry point of ``python -m purejaxql.<alg>``: hydra overrides from the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available_algs()
    chosen = [a for a in argv if a.startswith(("+alg=", "alg="))]
    if not chosen:
        default = f"{alg.split('_')[0]}_mpe" + ("_tag_pretrained" if alg.endswith("_pretrained") else "")
        print(f"purejaxql: no +alg given, using +alg={default} (available: {', '.join(names)})", flush=True)
        argv.append(f"+alg={default}")
    else:
        name = chosen[0].split("=", 1)[1]
        if name not in names:
            print(f"purejaxql: error: unknown +alg={name}; available: {', '.join(names)}", file=sys.stderr)
            sys.exit(2)
        if name.split("_")[0] != alg.split("_")[0]:
            print(f"purejaxql: warning: running {alg} with the {name} config", file=sys.stderr)
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path="pkg://" + CONFIG_PACKAGE, config_name="config")
    def _main(cfg):
        flat = OmegaConf.to_container(cfg, resolve=True)
        top, alg_cfg = {k: v for k, v in flat.items() if k != "alg"}, flat.get("alg", {})
        try:
            clash = sorted(set(top) & set(alg_cfg))
            if clash:
                raise ConfigError(f"{clash[0]} is an algorithm key: set it as alg.{clash[0]}=...")
            main_from_cfg(make_train, alg, {**top, **alg_cfg})
        except ConfigError as e:
            print(f"purejaxql: error: {e}", file=sys.stderr)
            sys.exit(2)

    sys.argv = [sys.argv[0]] + argv
    _main()
