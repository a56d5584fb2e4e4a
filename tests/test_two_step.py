"""The QMIX paper's two-step game (Rashid et al. 2018, §6.1): with full exploration, greedy QMIX
reaches the optimal payoff 8 per agent, VDN and IQL settle for 7 (team return = 2 × payoff)."""
import jax
import numpy as np
import pytest

from envs import TwoStepGame
from purejaxql import iql_ps, qmix_ps, vdn_ps

CONFIG = dict(NUM_ENVS=16, NUM_STEPS=2, TOTAL_TIMESTEPS=1.5e4, BUFFER_SIZE=512, BUFFER_BATCH_SIZE=32,
              AGENT_TYPE="ff", AGENT_HIDDEN_DIM=32, EPSILON_START=1.0, EPSILON_FINISH=1.0, LR=0.005,
              TARGET_UPDATE_INTERVAL=10, GAMMA=0.99, LEARNING_STARTS=0, TEST_NUM_ENVS=4,
              TEST_INTERVAL=0.1, MAX_GRAD_NORM=10)
SEEDS = 3


def final_greedy_returns(module, extra=None):
    train = jax.jit(jax.vmap(module.make_train({**CONFIG, **(extra or {})}, TwoStepGame())))
    out = train(jax.random.split(jax.random.PRNGKey(0), SEEDS))
    return np.asarray(out["metrics"]["test_returned_episode_returns"][:, -1])


@pytest.mark.timeout(300)
def test_qmix_finds_the_optimal_joint_action():
    r = final_greedy_returns(qmix_ps, dict(MIXER_EMBEDDING_DIM=8, MIXER_HYPERNET_HIDDEN_DIM=16,
                                           MIXER_INIT_SCALE=1.0))
    np.testing.assert_allclose(r, 16.0)  # both agents paid 8


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module", [vdn_ps, iql_ps], ids=["vdn", "iql"])
def test_vdn_and_iql_settle_for_seven(module):
    np.testing.assert_allclose(final_greedy_returns(module), 14.0)  # both agents paid 7
