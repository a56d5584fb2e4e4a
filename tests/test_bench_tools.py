"""The diagnostics bench/ scripts read: the QPLEX mixer's sown weights, the final evaluation of a run's output."""
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxql.qplex import QPlexMixer

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def bench_module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_qplex_sown_weights_are_the_ones_q_tot_uses():
    """Q_tot(q, v) - Q_tot(v, v) = Σ_i λ_i w_i (q_i - v_i) and Q_tot(v, v) - Q_tot(0, 0) = Σ_i w_i v_i: the sown w
    and λ (bench/qplex_mixer_stats.py) reproduce the mixer's own output, agent by agent."""
    N, A, S = 3, 4, 7
    net = QPlexMixer(N, A, 16, 5)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    s = jax.random.normal(k1, (S,))
    u = jax.random.randint(k2, (N,), 0, A)
    v = jax.random.normal(k3, (N,))
    params = net.init(jax.random.PRNGKey(1), v, v, u, s)
    _, inter = net.apply(params, v, v, u, s, mutable=["intermediates"])
    w, lam = (np.asarray(inter["intermediates"][k][0]) for k in ("w", "lam"))
    assert w.shape == lam.shape == (N,) and (w > 0).all() and (lam > 0).all()
    q_tot = lambda q, vv: float(net.apply(params, q, vv, u, s))
    np.testing.assert_allclose(q_tot(v, v) - q_tot(jnp.zeros(N), jnp.zeros(N)), float((w * v).sum()), rtol=1e-4, atol=1e-5)
    for i in range(N):
        q = v.at[i].add(-0.5)                     # agent i below its greedy value: A_i = -0.5
        np.testing.assert_allclose(q_tot(q, v) - q_tot(v, v), -0.5 * lam[i] * w[i], rtol=1e-4, atol=1e-5)


def test_final_evaluation_reads_both_sides():
    """Ours: the last entry of the test_ metrics; JaxMARL's replay scripts: the evaluation in runner_state[2]."""
    final_evaluation = bench_module("vs_jaxmarl").final_evaluation
    ours = {"metrics": {"test_returned_episode_returns": np.array([[1.0, 2.0, 3.5]]),
                        "test_returned_won_episode": np.array([[0.0, 0.5, 0.75]]), "loss": np.ones(3)}}
    assert final_evaluation(ours) == {"returned_episode_returns": 3.5, "returned_won_episode": 0.75}
    theirs = {"runner_state": ("train", "buffer", {"returned_episode_returns": np.array([0.9]),
                                                   "returned_won_episode": np.array([0.125])}, "rng"),
              "metrics": None}
    assert final_evaluation(theirs) == {"returned_episode_returns": 0.9, "returned_won_episode": 0.125}
    mpe = final_evaluation({"metrics": {"test_returned_episode_returns": np.array([-20.0])}})
    assert mpe["returned_episode_returns"] == -20.0 and np.isnan(mpe["returned_won_episode"])
