"""The experiment: one run of an entry module from start to end, and what it leaves in its run folder.

Builds the env, resolves the config once (:func:`purejaxql.config.resolve_config`; that resolved config is
what is saved in config.yaml, compared on RESUME, checked per HYP_TUNE grid point and trained), loads frozen
pretrained agents, starts or resumes the run folder (purejaxql.run_folder), runs the program in chunks
(purejaxql.driver), logs to wandb, writes each seed's final parameters (purejaxql.checkpoint) and the
summary; EVAL_ONLY evaluates a checkpoint instead. Nothing here knows hydra: the CLI (purejaxql.cli) passes
plain dicts.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.checkpoint import (agent_params, checkpoint_path, load_checkpoint, resolve_path, save_checkpoint,
                                  write_json)
from purejaxql.config import ConfigError, check_run_keys, resolve_config, settable
from purejaxql.driver import run_training
from purejaxql.atari_env import is_atari_name
from purejaxql.environments import env_label, make_env
from purejaxql.loop import eval_key
from purejaxql.run_folder import (RESULT_NEUTRAL_KEYS, Recorder, TrainingStopped, config_differences, resume_point,
                                  versions, write_config)
from purejaxql.spec import SPECS, Spec
from purejaxql.tuning import grid_arrays, report_tune, tune_grid

__all__ = ["run_experiment", "evaluate_checkpoint", "load_pretrained", "save_checkpoints", "resume_config",
           "run_summary", "summarise", "checkpoint_every"]


def summarise(metrics: Dict[str, np.ndarray], timings: Dict[str, float], alg: str, env_name: str) -> str:
    """The lines printed at the end of a run: final greedy return over seeds and per seed, timings."""
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


def wandb_logger(cfg: Dict[str, Any], alg: str, env_name: str):
    """WANDB_MODE offline/online: (log(metrics of a chunk), the wandb run); disabled: (None, None)."""
    mode = cfg.get("WANDB_MODE", "disabled")
    if mode == "disabled":
        return None, None
    import wandb  # optional at run time: imported only when logging is on
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


def load_pretrained(cfg: Dict[str, Any], spec: Spec, env) -> Optional[Dict[str, Any]]:
    """PRETRAINED_AGENTS {agent: checkpoint path} -> {agent: network params} (None for other modules)."""
    paths = cfg.get("PRETRAINED_AGENTS") or {}
    if not spec.pretrained:
        if paths:
            raise ConfigError(f"PRETRAINED_AGENTS is only read by the *_pretrained modules, not {spec.module}")
        return None
    if not isinstance(paths, dict) or not paths:
        raise ConfigError(f"{spec.module} needs PRETRAINED_AGENTS: {{agent_name: path/to.safetensors}} "
                          f"(got {paths!r})")
    for agent in paths:
        if agent not in env.agents:
            raise ConfigError(f"PRETRAINED_AGENTS names {agent!r}, which is not an agent of "
                              f"{cfg.get('ENV_NAME')} ({list(env.agents)})")
    return {agent: agent_params(resolve_path(path), agent) for agent, path in paths.items()}


def save_checkpoints(runner, train_cfg: Dict[str, Any], cfg: Dict[str, Any], spec: Spec, env_name: str,
                     env, metrics: Dict[str, np.ndarray], folder: Optional[Path] = None) -> List[str]:
    """Write each seed's final parameters (see purejaxql.checkpoint) as ``folder/seed<SEED>_<i>.safetensors``,
    or, without ``folder``, under SAVE_PATH as ``SAVE_PATH/<env>/<module>/seed<SEED>_<i>.safetensors``."""
    params = jax.tree.map(np.asarray, runner.train.params)
    seed, n_seeds = int(cfg.get("SEED", 0)), len(jax.tree.leaves(params)[0])
    keys = np.asarray(jax.vmap(lambda k: jax.random.key_data(eval_key(k, train_cfg["NUM_UPDATES"] - 1)))(
        runner.test_rng))
    saved = []
    for i in range(n_seeds):
        info = {"module": spec.module, "algorithm": spec.algorithm, "variant": spec.variant_label, "env": env_name,
                "agents": list(env.agents), "seed": seed, "seed_index": i, "num_seeds": n_seeds,
                "pretrained_agents": dict(cfg.get("PRETRAINED_AGENTS") or {}),
                "final_test_return": float(metrics["test_returned_episode_returns"][i, -1]),
                "final_eval_key": [int(x) for x in keys[i].ravel()],
                "config": settable(train_cfg)}
        path = Path(folder) / f"seed{seed}_{i}.safetensors" if folder is not None else \
            checkpoint_path(cfg["SAVE_PATH"], env_name, spec.module, seed, i)
        saved.append(str(save_checkpoint(path, jax.tree.map(lambda x: x[i], params), info)))
    return saved


def evaluate_checkpoint(path: str, cfg: Dict[str, Any], spec: Spec) -> Dict[str, float]:
    """EVAL_ONLY: greedy evaluation of a checkpoint's agents, no training. Uses the checkpoint's config
    (env, network) with this run's TEST_NUM_ENVS / TEST_NUM_STEPS / TEST_EPSILON, and the key of the training run's
    final evaluation, so with the same test settings it reproduces that run's final greedy return."""
    params, info = load_checkpoint(resolve_path(path))
    module = info["module"]
    if module not in SPECS:
        raise ConfigError(f"{path} names its module {module!r}, which is not one of {sorted(SPECS)}")
    trained_by = SPECS[module]
    if (trained_by.algorithm, trained_by.variant) != (spec.algorithm, spec.variant):
        print(f"purejaxql: note: {path} was trained by {module}; evaluating it as such", file=sys.stderr)
    ckpt_cfg = dict(info["config"])
    for k in ("TEST_NUM_ENVS", "TEST_NUM_STEPS", "TEST_EPSILON"):
        if cfg.get(k) is not None:
            ckpt_cfg[k] = cfg[k]
    env = make_env(ckpt_cfg)
    pretrained = load_pretrained({**ckpt_cfg, "PRETRAINED_AGENTS": info.get("pretrained_agents")}, trained_by, env)
    train = trained_by.make_train(ckpt_cfg, env, pretrained)
    agent = jax.tree.map(jnp.asarray, params["agent"])
    try:
        jax.eval_shape(train.evaluate, jax.random.PRNGKey(0), agent)
    except Exception as e:
        raise ConfigError(f"the parameters in {path} do not fit the network of its config ({e})") from None
    key = jax.random.wrap_key_data(jnp.asarray(info["final_eval_key"], jnp.uint32)) \
        if "final_eval_key" in info else jax.random.PRNGKey(int(cfg.get("SEED", 0)))
    out = {k: float(v) for k, v in jax.jit(train.evaluate)(key, agent).items()}
    env_name = info["env"]
    policy = "greedy" if not train.config.get("TEST_EPSILON") else f"ε-greedy (ε {train.config['TEST_EPSILON']})"
    line = (f"{module} checkpoint {path} on {env_name}: {policy} team return "
            f"{out['test_returned_episode_returns']:.3f} ± {out['test_returned_episode_returns_std']:.3f} "
            f"over {train.config['TEST_NUM_ENVS']} episodes")
    if train.env.has_won:
        line += f", win rate {out['test_returned_won_episode']:.3f}"
    print(line, flush=True)
    return out


def resume_config(spec: Spec, top: Dict[str, Any], alg_cfg: Dict[str, Any], overrides: List[str]):
    """RESUME=<run folder>: the run's saved config, with the result-neutral run keys of this command line
    (PROGRESS, WATCHDOG_TIMEOUT, WANDB_*, CHECKPOINT_*, ...). Keys the command line sets that would change
    results are refused by name. -> (run keys, alg keys, state checkpoint to load)."""
    folder = Path(str(top["RESUME"]))
    saved, path, header = resume_point(folder)
    if header.get("module") != spec.module:
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
        resolved = resolve_config(alg_cfg, spec, make_env(alg_cfg))
        now["alg"] = settable(resolved)
    diffs = config_differences(saved, now, keys)
    if diffs:
        raise ConfigError(f"RESUME={folder}: the command line changes what the run computes: " + "; ".join(diffs)
                          + ". Resume with the run's own config (leave these out) or start a new run.")
    run_keys = {k: v for k, v in saved.items() if k != "alg"}
    run_keys.update({k: v for k, v in top.items() if k in RESULT_NEUTRAL_KEYS})
    return run_keys, dict(saved["alg"]), path


def start_distributed(run_dir: Path, top: Dict[str, Any]):
    """DISTRIBUTED=True: join the other hosts' processes (jax.distributed.initialize reads the cluster
    from Slurm / Open MPI / the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID variables).
    Every process runs the same program over all hosts' devices; process 0 writes the run folder (the
    others write theirs under it, as process<k>/). State checkpoints and RESUME are single-host only."""
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


def run_experiment(spec: Spec, top: Dict[str, Any], alg_cfg: Dict[str, Any], run_dir: Path,
                   overrides: Optional[List[str]] = None):
    """Run one job of ``spec``'s module: run keys ``top`` (config/config.yaml), algorithm keys ``alg_cfg``,
    the run folder ``run_dir``; ``overrides`` are the command line's (compared against the run when
    resuming). -> the metrics history (EVAL_ONLY: the evaluation's metrics)."""
    if top.get("EVAL_ONLY"):
        return evaluate_checkpoint(str(top["EVAL_ONLY"]), {**top, **alg_cfg}, spec)
    check_run_keys(top)
    if top.get("DISTRIBUTED") and is_atari_name(alg_cfg.get("ENV_NAME")):   # refused before joining a cluster
        raise ConfigError(f"{alg_cfg['ENV_NAME']} runs its games outside the program (EnvPool): one seed per "
                          "process, so DISTRIBUTED must be off")
    if top.get("DISTRIBUTED"):
        run_dir, top = start_distributed(run_dir, top)
    state_path = None
    if top.get("RESUME"):
        top, alg_cfg, state_path = resume_config(spec, top, alg_cfg, list(overrides or []))
        run_dir = Path(str(top["RESUME"]))
    cfg = {**top, **alg_cfg}
    env = make_env(cfg)
    env_name, alg = env_label(cfg), spec.module
    pretrained = load_pretrained(cfg, spec, env)
    train_cfg = resolve_config(alg_cfg, spec, env)  # the one resolution: saved, resumed, tuned, trained
    run_keys = {k: v for k, v in top.items() if k not in ("RESUME", "EVAL_ONLY")}
    num_seeds = int(top.get("TUNE_NUM_SEEDS", 4) if top.get("HYP_TUNE") else top.get("NUM_SEEDS", 1))
    if getattr(env, "runs_on_host", False) and (num_seeds > 1 or top.get("HYP_TUNE")):
        raise ConfigError(f"{cfg['ENV_NAME']} runs its games outside the program (EnvPool): one seed per process, "
                          f"so NUM_SEEDS must be 1 and HYP_TUNE off (got NUM_SEEDS={num_seeds}, "
                          f"HYP_TUNE={top.get('HYP_TUNE')}); run seeds as separate processes (hydra -m SEED=0,1,2)")
    tune = tune_grid(train_cfg, spec, env) if top.get("HYP_TUNE") else None
    batching = str(top.get("SEED_BATCHING", "vmap"))
    program = spec.make_train(train_cfg, env, pretrained)  # built before the run folder starts: it checks too
    saved_alg = settable(train_cfg)
    index = None if tune is None else {"config": np.repeat(np.arange(len(tune[1])), num_seeds),
                                       "seed_index": np.tile(np.arange(num_seeds), len(tune[1]))}
    if state_path is None:  # the config is valid: the run folder starts here
        write_config(run_dir, run_keys, saved_alg)
    header = {"module": alg, "env": env_name, "config": {**run_keys, "alg": saved_alg}}
    rec = Recorder(run_dir, train_cfg["NUM_UPDATES"], checkpoint_every(top.get("CHECKPOINT_INTERVAL"),
                                                                       train_cfg["NUM_UPDATES"]),
                   int(top.get("CHECKPOINT_KEEP", 2)),
                   bool(top.get("NAN_CHECK", True)) and tune is None,  # a diverging grid point is a result
                   header, f"{alg} on {env_name}", index)
    log, wandb_run = wandb_logger(cfg, alg, env_name)
    verb = f"resuming {run_dir} from {state_path.name}" if state_path else "compiling"
    what = f"{num_seeds} seed(s)" if tune is None else \
        f"HYP_TUNE: {len(tune[1])} configurations x {num_seeds} seeds in one program"
    what += f" ({'vmapped' if batching == 'vmap' else 'one after another'})" if num_seeds > 1 or tune else ""
    print(f"purejaxql: {alg} on {env_name}, {what}; {verb}...", flush=True)

    def on_chunk(get_state, metrics, finite, updates_done):
        rec.chunk(get_state, metrics, finite, updates_done)
        if log is not None:
            log(metrics)

    t0 = time.time()
    try:
        final, _, timings = run_training(
            lambda traced: spec.make_train({**train_cfg, **traced}, env, pretrained) if traced else program,
            int(cfg.get("SEED", 0)),
            num_seeds, hparams=None if tune is None else grid_arrays(tune[1], num_seeds),
            progress=bool(cfg.get("PROGRESS", True)), watchdog_timeout=float(cfg.get("WATCHDOG_TIMEOUT", 600)),
            on_chunk=on_chunk, resume_from=(lambda template: rec.resume(state_path, template)) if state_path else None,
            batching=batching)
    except TrainingStopped as e:
        rec.plots()
        elapsed = {"compile_s": float("nan"), "run_s": time.time() - t0, "steps_per_s": float("nan")}
        write_json(run_dir / "summary.json", run_summary(rec.history(), elapsed, alg, env_name, run_keys,
                                                         {"NUM_UPDATES": rec.num_updates}, f"stopped: {e}",
                                                         str(state_path) if state_path else None))
        raise
    history, runner = rec.history(), final["runner"]
    tuned = None
    if tune is not None:  # rank the configurations; the summary and checkpoints are the best one's
        best = report_tune(run_dir, tune, history, num_seeds, f"{alg} on {env_name}")
        tuned = {"keys": tune[0], "configurations": len(tune[1]), "best": best}
        runs = np.arange(best["config"] * num_seeds, (best["config"] + 1) * num_seeds)
        runner = jax.tree.map(lambda x: x[runs], runner)
        history = {k: v[runs] for k, v in history.items()}
        train_cfg = {**train_cfg, **{k: best[k] for k in tune[0]}}
        print(f"  best configuration {best['config']}: " + ", ".join(f"{k}={best[k]:g}" for k in tune[0]),
              flush=True)
    else:
        print(summarise(history, timings, alg, env_name), flush=True)
    summary = run_summary(history, timings, alg, env_name, run_keys, train_cfg, "finished",
                          str(state_path) if state_path else None)
    if tuned is not None:
        summary["tune"] = tuned
    saved = save_checkpoints(runner, train_cfg, cfg, spec, env_name, env, history, run_dir / "checkpoints")
    if cfg.get("SAVE_PATH"):
        saved += save_checkpoints(runner, train_cfg, cfg, spec, env_name, env, history)
    rec.plots()
    write_json(run_dir / "summary.json", summary)
    for path in saved:
        print(f"  saved {path}", flush=True)
    print(f"  run folder: {run_dir} (config.yaml, metrics.csv, summary.json, training_plots.png, checkpoints/)",
          flush=True)
    if wandb_run is not None:
        wandb_run.finish()
    return history
