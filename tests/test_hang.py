"""The CPU deadlock: batched LAPACK QR (from orthogonal init under vmap) can deadlock XLA:CPU's
2-thread intra-op pool. The training programs must contain no LAPACK call, and our orthogonal
initialiser must still be orthogonal."""
import jax
import numpy as np
import pytest
from jaxmarl import make

from purejaxql import iql_ps, qmix_ps, vdn_ps
from purejaxql.networks import orthogonal


@pytest.mark.parametrize("module", [iql_ps, vdn_ps, qmix_ps], ids=["iql", "vdn", "qmix"])
def test_vmapped_training_program_has_no_lapack_call(module):
    env = make("MPE_simple_spread_v3")
    train = module.make_train({"TOTAL_TIMESTEPS": 2000, "TEST_NUM_ENVS": 4, "LEARNING_STARTS": 0,
                                "TARGET_UPDATE_INTERVAL": 5}, env)
    hlo = jax.jit(jax.vmap(train)).lower(jax.random.split(jax.random.PRNGKey(0), 3)).as_text()
    assert "lapack" not in hlo.lower()


def test_the_check_above_can_fail():
    f = jax.vmap(lambda k: jax.nn.initializers.orthogonal()(k, (8, 8)))
    assert "lapack" in jax.jit(f).lower(jax.random.split(jax.random.PRNGKey(0), 3)).as_text().lower()


@pytest.mark.parametrize("shape", [(21, 64), (64, 64), (64, 5), (3, 4, 8), (256, 512)])
def test_orthogonal_init_is_orthogonal(shape):
    w = np.asarray(orthogonal(2.0)(jax.random.PRNGKey(1), shape)).reshape(-1, shape[-1])
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(gram.shape[0]), atol=1e-4)
    w2 = np.asarray(orthogonal(2.0)(jax.random.PRNGKey(2), shape))
    assert not np.allclose(w2.reshape(w.shape), w)  # depends on the key


def test_watchdog_ends_a_stalled_run_loudly():
    import subprocess
    import sys
    code = ("import time\nfrom purejaxql.driver import Watchdog\nw = Watchdog(1.0)\nw.beat(0.01)\n"
            "time.sleep(30)\nprint('not stopped')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "appears stuck" in r.stderr and "Thread" in r.stderr  # message and thread stacks
    assert "not stopped" not in r.stdout
