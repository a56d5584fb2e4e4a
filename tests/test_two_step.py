"""The QMIX paper's two-step game (Rashid et al. 2018, §6.1) with full exploration (ε = 1 throughout).

Greedy QMIX reaches the optimal payoff 8 per agent (team return 16); VDN and IQL settle for 7 (14).
A greedy return alone is a weak check: an untrained network's greedy joint action already gives 14 for
half of all seeds (49.7 %) and 16 for 27.1 % (``python bench/learning_baselines.py two-step``, 1024 seeds).
So each test also asserts that the learned Q-values sit at the fixed point of the algorithm's update
under uniformly random joint actions, computed below from the payoffs (``fixed_point``); untrained
networks are far from it, however lucky their greedy actions (max over the table: at least 6.8 for IQL,
13.6 for VDN, 16.0 for QMIX, over those 1024 seeds).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import TwoStepGame, TwoStepState
from purejaxql import iql_ps, qmix_ns, qmix_ps, vdn_ps

# QMIX runs with its shipped mixer (QMIX_DEFAULTS) and, like VDN and IQL, the shipped LR decay.
CONFIG = dict(NUM_ENVS=16, NUM_STEPS=2, TOTAL_TIMESTEPS=1.5e4, BUFFER_SIZE=512, BUFFER_BATCH_SIZE=32,
              AGENT_TYPE="ff", AGENT_HIDDEN_DIM=32, EPSILON_START=1.0, EPSILON_FINISH=1.0, LR=0.005,
              TARGET_UPDATE_INTERVAL=10, GAMMA=0.99, LEARNING_STARTS=0, TEST_NUM_ENVS=4,
              TEST_INTERVAL=0.1, MAX_GRAD_NORM=10)
SEEDS = 3
GAMMA = CONFIG["GAMMA"]


def fixed_point(alg: str) -> np.ndarray:
    """Where the algorithm's Q-values converge when both agents act uniformly at random.

    Returns a (3 states: 1, 2A, 2B) × 2 × 2 table: Q_tot(s, a_0, a_1) for VDN and QMIX (team reward =
    2 × payoff), Q_i(s, a_i) per agent i (rows) for IQL (each agent's own reward = the payoff).
    """
    payoff = {1: np.full((2, 2), 7.0), 2: TwoStepGame().payoff_2b.__array__()}  # state 2A, 2B: (a_0, a_1)
    if alg == "iql":
        # each agent averages over the other's uniform action; state 1's bootstrap is its own greedy value
        # in the next state (agent 0's action picks 2A / 2B, agent 1's picks nothing)
        q = {s: np.stack([p.mean(1), p.mean(0)]) for s, p in payoff.items()}  # (agent, a_i)
        v = {s: x.max(1) for s, x in q.items()}                                  # (agent,)
        first = np.array([[GAMMA * v[1][0], GAMMA * v[2][0]], [GAMMA * (v[1][1] + v[2][1]) / 2] * 2])
        return np.stack([first, q[1], q[2]])
    team = {s: 2 * p for s, p in payoff.items()}
    if alg == "vdn":
        # the least-squares additive fit Q_0(a_0) + Q_1(a_1) of each matrix under uniform joint actions
        team = {s: p.mean(1, keepdims=True) + p.mean(0, keepdims=True) - p.mean() for s, p in team.items()}
    # (qmix: a monotonic mixer represents both matrices exactly)
    first = np.repeat(GAMMA * np.array([[team[1].max()], [team[2].max()]]), 2, 1)
    return np.stack([first, team[1], team[2]])


def train_seeds(module):
    train = module.make_train(CONFIG, TwoStepGame())
    out = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), SEEDS))
    return train, out


def q_table(train, params, alg: str) -> jnp.ndarray:
    """The networks' (3, 2, 2) table of :func:`fixed_point` for one seed's ``params``."""
    w = train.env
    wrapped = [w._wrap_obs(w._env._obs(TwoStepState(jnp.int32(s), jnp.int32(0))), None) for s in range(3)]
    obs = jnp.stack([jnp.stack([o[a] for a in w.agents]) for o in wrapped])[None]       # (1, 3, 2, D)
    _, q = train.agents.apply(params["agent"], train.agents.initial_hidden(3), obs, jnp.ones((1, 3), bool))
    q = q[0, :, :, :2]                                                                # (3, N=2, A=2)
    if alg == "iql":
        return q
    q0 = jnp.broadcast_to(q[:, 0, :, None], (3, 2, 2))
    q1 = jnp.broadcast_to(q[:, 1, None, :], (3, 2, 2))
    if alg == "vdn":
        return q0 + q1
    states = jnp.stack([o["__all__"] for o in wrapped])                                # (3, S)
    mixer = train.parts.mixer  # the program's own QMIX mixer
    return mixer.apply(params["mixer"], jnp.stack([q0, q1], -1), jnp.broadcast_to(states[:, None, None],
                                                                                   (3, 2, 2, states.shape[-1])))


def check(module, alg: str, greedy: float, tol: float):
    train, out = train_seeds(module)
    returns = np.asarray(out["metrics"]["test_returned_episode_returns"][:, -1])
    params = out["runner_state"].train.params
    tables = np.asarray(jax.vmap(lambda p: q_table(train, p, alg))(params))
    err = np.abs(tables - fixed_point(alg)).max(axis=(1, 2, 3))
    assert (err < tol).all(), (err, tables)
    np.testing.assert_allclose(returns, greedy)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module", [qmix_ps, qmix_ns], ids=["ps", "ns"])
def test_qmix_finds_the_optimal_joint_action(module):
    check(module, "qmix", 16.0, 0.5)  # both agents paid 8 (ns: each agent with its own network)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module,alg", [(vdn_ps, "vdn"), (iql_ps, "iql")], ids=["vdn", "iql"])
def test_vdn_and_iql_settle_for_seven(module, alg):
    check(module, alg, 14.0, 1.0)  # both agents paid 7
