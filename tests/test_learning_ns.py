"""Per-agent parameters learn on agents of different shapes, MPE_simple_speaker_listener_v4 (speaker:
3 obs, 3 actions; listener: 11 obs, 5 actions), and the listener learns to use the speaker's message.

Only the speaker sees the goal; the listener sees its velocity, the landmarks and the speaker's message.
The baseline to beat is a listener that ignores the speaker: trained with this CONFIG on the same env with
the message zeroed in the listener's observation (``python bench/learning_baselines.py mute-speaker
--seeds 0 1 2 3``), qmix_ns ends at a greedy team return of -31.9, -31.9, -33.5, -31.9 (seeds 0-3), and no
greedy evaluation during those runs scored above -27.5: without the message the listener can only head
between the landmarks. With the message, qmix_ns ends at -15.4, -16.5, -16.2, -19.5 (seeds 0-3). A
uniformly random policy scores -83.8 (1024 episodes, ``bench/random_policy.py``); the untrained greedy
networks -335.2 (seed 0).

Budget: feed-forward agents, 4 gradient steps per update and a target sync every 20 updates learn to
communicate within 5e5 env steps (~40 s of training on 2 cores); with the ``ql_rnn_mpe`` settings (GRU,
target sync every 200 updates) the message is still unused at 1.5e5 steps (qmix_ns seeds 0-2: -41.5,
-36.4, -41.4 with the message, -39.0, -35.7, -40.0 without) and only pays off near 1e6 steps (-16.0).
"""
import jax
import numpy as np
import pytest

from purejaxql import qmix_ns
from purejaxql.environments import make_env

RANDOM_RETURN = -83.8
THRESHOLD = -25.0  # above every muted listener's evaluations (best -27.5), below every listener's end (-19.5)

CONFIG = {"ENV_NAME": "MPE_simple_speaker_listener_v4", "TOTAL_TIMESTEPS": 5e5, "NUM_ENVS": 8,
          "AGENT_TYPE": "ff", "NUM_EPOCHS": 4, "BUFFER_SIZE": 5000, "BUFFER_BATCH_SIZE": 32,
          "EPSILON_ANNEAL_TIME": 5e4, "MAX_GRAD_NORM": 25, "TARGET_UPDATE_INTERVAL": 20, "LR": 0.005,
          "LR_LINEAR_DECAY": True, "GAMMA": 0.9, "TIMEOUT_AS_TERMINAL": False, "LEARNING_STARTS": 10000,
          "TEST_INTERVAL": 0.1, "TEST_NUM_ENVS": 256}


# slow (~2 min on 2 cores): the default run's learning check of per-agent networks is the two-step game's
# qmix_ns case (tests/test_two_step.py)
@pytest.mark.slow
def test_qmix_ns_listener_uses_the_speaker():
    env = make_env(CONFIG)
    out = jax.jit(qmix_ns.make_train(CONFIG, env))(jax.random.PRNGKey(0))
    ret = np.asarray(out["metrics"]["test_returned_episode_returns"])
    assert ret[0] < RANDOM_RETURN  # untrained greedy agents are worse than random
    assert ret[-1] > THRESHOLD, ret
