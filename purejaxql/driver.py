"""The driver: runs a training program in chunks of updates, with a live progress line, a watchdog and the
runs sharded over the devices. It knows nothing of hydra or of run folders: the experiment
(purejaxql.experiment) passes callbacks for what happens between chunks.

Chunks give results identical to one ``jax.jit(program)`` call (the same scan over update indices, cut
into pieces that carry the whole state, with donation); between chunks the terminal shows progress, the
experiment writes metrics and checkpoints, and the watchdog notices a program that stopped making
progress. One compile serves every chunk (their size divides NUM_UPDATES).
"""
from __future__ import annotations

import faulthandler
import functools
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxql.config import ConfigError

__all__ = ["run_training", "run_shardings", "chunk_size", "Watchdog", "Progress"]


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


def run_training(make_program: Callable[[Mapping[str, Any]], Any], seed: int, num_seeds: int,
                 hparams: Optional[Mapping[str, np.ndarray]] = None, progress: bool = True,
                 watchdog_timeout: float = 600.0, on_chunk: Optional[Callable[..., None]] = None,
                 resume_from: Optional[Callable[[Any], Tuple[Any, int]]] = None, shard: bool = True,
                 batching: str = "vmap"):
    """Train ``num_seeds`` seeds (vmapped, or one after another; one run unbatched) in chunks of updates.

    ``make_program(traced)`` returns the training program (purejaxql.loop.Program) with the traced
    hyperparameters ``traced`` ({key: array}) in its config; ``make_program({})`` is the plain one.
    ``hparams`` ({key: (R,) values}; HYP_TUNE) gives each of R runs its own traced hyperparameters
    (purejaxql.tuning.TRACEABLE); run r uses seed r % num_seeds. With several local devices the runs are
    sharded over them (``shard``). The carried state is ``{"runner": runner state, "hp": hparams}``.

    ``on_chunk(get_state, metrics, params_finite, updates_done)`` runs after each chunk (metrics (R, chunk)
    numpy arrays, params_finite (R,); ``get_state()`` returns the state with its runs axis, built only when
    called: one run's state is carried without that axis, since adding it inside the program made XLA copy
    the whole state, replay buffer included, at every chunk). ``resume_from(state_template) -> (state,
    updates_done)`` replaces the initial state. ``batching`` (SEED_BATCHING): ``vmap`` batches the runs into
    one program's arrays (the fastest measured, on CPU too: README "Many seeds on a CPU"); ``map`` runs them
    one after another inside the program (``lax.map``: one compile, an update's intermediate arrays at one
    run's size). Returns (state with the runs axis, metrics of this process's chunks (R, U), timings)."""
    if num_seeds < 1:
        raise ConfigError(f"NUM_SEEDS must be >= 1, got {num_seeds}")
    if batching not in ("vmap", "map"):
        raise ConfigError(f"SEED_BATCHING must be vmap or map, got {batching!r}")
    train = make_program({})
    cfg = train.config
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()}
    n_runs = len(next(iter(hp.values()))) if hp else num_seeds
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    rngs = jnp.tile(keys, (n_runs // num_seeds, 1))
    n_updates, c = cfg["NUM_UPDATES"], chunk_size(cfg["NUM_UPDATES"])

    def program(h):  # the training program with traced hyperparameters h in its config
        return make_program(h) if h else train

    def init_one(k, h):
        return {"runner": program(h).init(k), "hp": h}

    def run_one(state, u):
        runner, metrics = program(state["hp"]).run(state["runner"], u)
        return {"runner": runner, "hp": state["hp"]}, metrics

    single = n_runs == 1  # one run goes unbatched (a vmap axis of size 1 makes XLA:CPU pick slower kernels)

    def with_runs_axis(tree):  # a single run's arrays -> (1, ...); batched runs' unchanged
        return jax.tree.map(lambda x: x[None], tree) if single else tree

    def params_finite(state):  # (R,): every parameter of the run is finite
        leaves = jax.tree.leaves(with_runs_axis(state["runner"].train.params))
        return jnp.stack([jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in leaves]).all(0)

    if n_runs > 1 and batching == "map":  # the runs one after another: a run's arrays keep a single run's shapes
        def init(k, h):
            return jax.lax.map(lambda kh: init_one(*kh), (k, h))

        def run_all(state, u):
            return jax.lax.map(lambda s: run_one(s, u), state)
    elif n_runs > 1:
        init, run_all = jax.vmap(init_one), jax.vmap(run_one, in_axes=(0, None))
    else:  # the state of a single run has no runs axis between chunks
        def init(k, h):
            return init_one(k[0], jax.tree.map(lambda x: x[0], h))

        run_all = run_one

    def chunk(state, update_indices):
        state, metrics = run_all(state, update_indices)
        return state, with_runs_axis(metrics), params_finite(state)

    multi = jax.process_count() > 1  # DISTRIBUTED over several hosts: arrays span processes

    def fetch(x):  # device arrays -> numpy on this host (all processes gather when there are several)
        if multi:
            x = multihost_utils.process_allgather(x, tiled=True)
        return jax.tree.map(np.asarray, x)

    runs, replicated = run_shardings(n_runs if shard and batching == "vmap" else 1)
    placed = replicated if single else runs
    jit_init = jax.jit(init, out_shardings=placed)
    jit_chunk = jax.jit(chunk, donate_argnums=0, in_shardings=(placed, replicated),
                        out_shardings=(placed, runs, runs))
    t0 = time.time()
    if resume_from is None:
        # host (numpy) inputs: the same values on every process, placed by the program's sharding
        state, start = jit_init(np.asarray(rngs), jax.tree.map(np.asarray, hp)), 0
    else:  # checkpoints hold the runs axis
        state, start = resume_from(jax.eval_shape(lambda k, h: with_runs_axis(init(k, h)), rngs, hp))
        state = jax.device_put(jax.tree.map(lambda x: x[0], state) if single else state, placed)
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
                on_chunk(functools.partial(with_runs_axis, state), metrics, finite, begin + c)
            if _CHUNK_PAUSE:
                time.sleep(_CHUNK_PAUSE)
    finally:
        dog.stop()
        bar.close()
    run_s = time.time() - t1
    state = with_runs_axis(state)
    if multi:
        state = fetch(state)
    metrics = {k: np.concatenate([m[k] for m in chunks], axis=1) for k in chunks[0]} if chunks else {}
    steps = (n_updates - start) * cfg["NUM_ENVS"] * cfg["NUM_STEPS"] * n_runs
    return state, metrics, {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / max(run_s, 1e-9)}


def run_shardings(n_runs: int):
    """(sharding of arrays with a leading runs axis, replicated sharding): the runs split evenly over the
    devices (all hosts' with DISTRIBUTED) when there are several and they divide n_runs, else everything on
    the default device."""
    devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    n = len(devices) if len(devices) > 1 and n_runs % len(devices) == 0 else 1
    if jax.process_count() > 1 and n == 1:
        raise ConfigError(f"DISTRIBUTED: {n_runs} run(s) do not split evenly over {len(devices)} devices; "
                          "make NUM_SEEDS (x the HYP_TUNE configurations) a multiple of the device count")
    mesh = Mesh(np.array(devices[:n]), ("runs",))
    return NamedSharding(mesh, PartitionSpec("runs")), NamedSharding(mesh, PartitionSpec())


# Fault-injection hook for the resume tests: seconds to sleep after each chunk (0 = none).
_CHUNK_PAUSE = float(os.environ.get("PUREJAXQL_CHUNK_PAUSE", "0") or 0)
