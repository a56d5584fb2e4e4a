"""Driver of tests/test_determinism.py, run as a fresh process:
``python tests/determinism_programs.py out.npz [--one-program-only]``.

Trains two tiny programs, QMIX (replay buffer, target network, GRU agents, mixer) and PQN-VDN (LayerNorm
agents, Q(lambda)), each as one jitted program and (unless ``--one-program-only``) the CLI's way
(``run_training``: ``train.init``, then chunks of updates carrying the whole state, with donation).
Saves every metric and the final parameters to ``out.npz`` under ``<alg>/<one|chunked>/<name>``, and
the process's XLA_FLAGS under ``XLA_FLAGS``. XLA's optimisation level is whatever the environment gives (the test leaves it at
the default)."""
import os
import sys

import jax
import numpy as np
from jaxmarl import make

from purejaxql import pqn_ps, qmix_ps
from purejaxql.driver import run_training

SEED = 3
QMIX = dict(NUM_ENVS=4, NUM_STEPS=8, TOTAL_TIMESTEPS=4 * 8 * 6, BUFFER_SIZE=32, BUFFER_BATCH_SIZE=4,
            AGENT_HIDDEN_DIM=16, LEARNING_STARTS=0, TARGET_UPDATE_INTERVAL=2, TEST_NUM_ENVS=4,
            TEST_NUM_STEPS=26, TEST_INTERVAL=0.34, MIXER_EMBEDDING_DIM=8, MIXER_HYPERNET_HIDDEN_DIM=16,
            EPSILON_ANNEAL_TIME=100)
PQN = dict(NUM_ENVS=4, NUM_STEPS=8, TOTAL_TIMESTEPS=4 * 8 * 6, AGENT_HIDDEN_DIM=16, NUM_EPOCHS=2,
           NUM_MINIBATCHES=2, TEST_NUM_ENVS=4, TEST_NUM_STEPS=26, TEST_INTERVAL=0.34, EPSILON_ANNEAL_TIME=100)


def flat_params(params, prefix):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {f"{prefix}/params{jax.tree_util.keystr(path)}": np.asarray(x) for path, x in leaves}


def train_each_way(make_train, config, env, alg, chunked=True):
    out = {}
    # one program, with the key run_training gives seed 0 of SEED
    key = jax.random.split(jax.random.PRNGKey(SEED), 1)[0]
    one = jax.jit(make_train(config, env))(key)
    out.update({f"{alg}/one/{k}": np.asarray(v) for k, v in one["metrics"].items()})
    out.update(flat_params(one["runner_state"].train.params, f"{alg}/one"))
    if not chunked:
        return out
    # the CLI's way: chunks of updates (one run goes unbatched; arrays carry a leading run axis of 1)
    program = make_train(config, env)
    state, metrics, _ = run_training(lambda traced: program, SEED, 1, progress=False, watchdog_timeout=0)
    assert program.config["NUM_UPDATES"] == 6
    out.update({f"{alg}/chunked/{k}": v[0] for k, v in metrics.items()})
    out.update(flat_params(jax.tree.map(lambda x: x[0], state["runner"].train.params), f"{alg}/chunked"))
    return out


def main(path, chunked=True):
    env = make("MPE_simple_spread_v3")
    out = {"XLA_FLAGS": np.array(os.environ.get("XLA_FLAGS", ""))}
    out.update(train_each_way(qmix_ps.make_train, QMIX, env, "qmix", chunked))
    out.update(train_each_way(pqn_ps.make_train, PQN, env, "pqn", chunked))
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1], chunked="--one-program-only" not in sys.argv[2:])
