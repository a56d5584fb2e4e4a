"""Episode bookkeeping checked against plain loops: the running return and length of each env's episode,
time-outs and won battles (``step_envs`` and the wrapper's ``won_episode``), the greedy evaluation's mean,
std, win rate and per-agent / per-team means over the first episode each env finishes, the training
metrics of the episodes that ended in a rollout (``episode_stats``), and the carried metrics and
evaluation schedule (``record``).

``ScriptedEnv``'s episodes are fixed at reset (length, reward scale, outcome) and visible in the
observation, so every expected number is computed here from the observations alone.
"""
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl.environments.multi_agent_env import MultiAgentEnv
from jaxmarl.environments.spaces import Box, Discrete

from purejaxql.environments import reset_envs, step_envs
from purejaxql.evaluation import make_greedy_eval
from purejaxql.loop import Setup, episode_stats, eval_key, record
from purejaxql.utils import CTRolloutManager

AGENTS = ["red_0", "red_1", "blue_0"]  # two teams: "red" (2 agents) and "blue" (1)
N, A, MAX_STEPS, BONUS = 3, 2, 6, 10.0


class ScriptedState(NamedTuple):
    t: jax.Array        # steps taken in the episode
    length: jax.Array   # the episode ends after this many steps (1..MAX_STEPS)
    c: jax.Array        # reward scale in [0, 1)
    won: jax.Array      # the battle is won (paid on the last step)


class ScriptedEnv(MultiAgentEnv):
    """Agent i's reward at step t (t = 0, 1, ...): (i + 1)·c + 0.1·t, whatever the actions; on the last
    step of a won episode agent 0 is paid exactly ``won_battle_bonus`` instead. Observation of every agent:
    [t, length, c, won]. Episodes of length MAX_STEPS end at the time limit."""
    won_battle_bonus = BONUS
    time_limit_truncates = True

    def __init__(self):
        super().__init__(num_agents=N)
        self.agents = list(AGENTS)
        self.max_steps = MAX_STEPS
        self.observation_spaces = {a: Box(0.0, 10.0, (4,)) for a in self.agents}
        self.action_spaces = {a: Discrete(A) for a in self.agents}

    def _obs(self, s):
        o = jnp.stack([s.t, s.length, s.c, s.won]).astype(jnp.float32)
        return {a: o for a in self.agents}

    def reset(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        s = ScriptedState(t=jnp.int32(0), length=jax.random.randint(k1, (), 1, MAX_STEPS + 1),
                          c=jax.random.uniform(k2), won=jax.random.bernoulli(k3))
        return self._obs(s), s

    def step_env(self, key, s, actions):
        last = s.t + 1 >= s.length
        base = (jnp.arange(N) + 1) * s.c + 0.1 * s.t
        r = base.at[0].set(jnp.where(last & s.won, BONUS, base[0]))
        rewards = {a: r[i] for i, a in enumerate(self.agents)}
        s = s._replace(t=s.t + 1)
        dones = {a: last for a in self.agents}
        dones["__all__"] = last
        return self._obs(s), s, rewards, dones, {}


def episode_return(obs):
    """(N,) return of the whole episode whose observations (t, length, c, won) are ``obs``."""
    _, length, c, won = obs
    t = np.arange(int(length))
    ret = np.array([((i + 1) * c + 0.1 * t).sum() for i in range(N)])
    if won:
        ret[0] += BONUS - (c + 0.1 * t[-1])
    return ret


def test_step_envs_running_returns_lengths_time_outs_and_wins():
    B, K = 8, 24
    env = CTRolloutManager(ScriptedEnv(), B)
    assert env.has_won

    @jax.jit
    def run(rng):
        carry = reset_envs(env, jax.random.fold_in(rng, 0), jnp.zeros((B, N, 0)))

        def step(carry, k):
            k_act, k_env = jax.random.split(k)
            actions = jax.random.randint(k_act, (B, N), 0, A)
            new, out = step_envs(env, k_env, carry, actions, carry.hidden)
            return new, (carry.obs[:, 0, :4], carry.first, carry.ep_return, carry.ep_len, out)
        return jax.lax.scan(step, carry, jax.random.split(rng, K))[1]

    obs, first, ep_return_in, ep_len_in, (rewards, done, agent_return, won, timeout, shaped) = \
        jax.tree.map(np.asarray, run(jax.random.PRNGKey(0)))
    assert not shaped.any()   # no REW_SHAPING_HORIZON: no shaped reward
    n_end = n_timeout = n_won = 0
    for b in range(B):
        running, steps = np.zeros(N), 0
        for k in range(K):
            t, length, c, w = obs[k, b]
            assert first[k, b] == (t == 0) and ep_len_in[k, b] == steps == t
            np.testing.assert_allclose(ep_return_in[k, b], running, rtol=1e-6, atol=1e-6)
            end = t + 1 == length
            running = running + rewards[k, b]
            steps += 1
            assert done[k, b] == end and won[k, b] == (end and w == 1)
            assert timeout[k, b] == (end and length == MAX_STEPS)
            np.testing.assert_allclose(agent_return[k, b], running, rtol=1e-6, atol=1e-6)
            if end:
                np.testing.assert_allclose(running, episode_return(obs[k, b]), rtol=1e-5, atol=1e-5)
                n_end, n_timeout, n_won = n_end + 1, n_timeout + (length == MAX_STEPS), n_won + w
                running, steps = np.zeros(N), 0
    assert n_end > 20 and 0 < n_won < n_end and n_timeout > 0  # every case happened


def zero_q(params, hidden, obs, first):
    return hidden, jnp.zeros(obs.shape[:-1] + (A,))


@pytest.mark.parametrize("num_steps", [1, 3, 5])
@pytest.mark.parametrize("team", [None, (0, 2)])
def test_greedy_eval_scores_the_first_finished_episode_of_each_env(num_steps, team):
    """Mean, population std and win rate of the team return over the envs whose first episode ended
    within ``num_steps`` (short episodes end again and must not count twice), each agent's mean over the
    same envs, and the team sums; NaN where no env finished."""
    B = 32
    env = CTRolloutManager(ScriptedEnv(), B)
    evaluate = jax.jit(make_greedy_eval(env, zero_q, lambda b: jnp.zeros((b, N, 0)), num_steps,
                                        log_agents=True, team=team))
    rng = jax.random.PRNGKey(num_steps)
    got = jax.tree.map(np.asarray, evaluate(rng, None))
    first_obs = np.asarray(env.batch_reset(jax.random.split(rng)[1])[0][AGENTS[0]])[:, :4]  # as evaluate resets
    finished = first_obs[:, 1] <= num_steps
    agent_ret = np.stack([episode_return(o) for o in first_obs])                      # (B, N)
    team_ret = agent_ret[:, list(team) if team else slice(None)].sum(1)
    keys = ["test_returned_episode_returns", "test_returned_episode_returns_std", "test_returned_won_episode"] + \
        [f"test_returned_episode_returns_{a}" for a in AGENTS] + ["test_returned_episode_returns_team_red"]
    assert sorted(got) == sorted(keys)
    if not finished.any():  # 1 step: only envs of length 1 finish, but with B = 32 some do
        pytest.fail("no env finished; pick another seed")
    r = team_ret[finished]
    agent_means = agent_ret[finished].mean(0)
    want = {keys[0]: r.mean(), keys[1]: r.std(), keys[2]: first_obs[finished, 3].mean(),
            **{f"{keys[0]}_{a}": agent_means[i] for i, a in enumerate(AGENTS)},
            f"{keys[0]}_team_red": agent_means[:2].sum()}
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-5, err_msg=k)
    assert 0 < finished.sum() < B or num_steps == MAX_STEPS
    assert (first_obs[finished, 1] < num_steps).any() or num_steps == 1  # some finished more than once


def test_greedy_eval_is_nan_when_no_env_finished():
    env = CTRolloutManager(ScriptedEnv(), 4)
    evaluate = make_greedy_eval(env, zero_q, lambda b: jnp.zeros((b, N, 0)), 1, log_agents=True)
    for seed in range(50):  # a seed where no env has a 1-step episode
        rng = jax.random.PRNGKey(seed)
        if (np.asarray(env.batch_reset(jax.random.split(rng)[1])[0][AGENTS[0]])[:, 1] > 1).all():
            break
    got = jax.tree.map(np.asarray, jax.jit(evaluate)(rng, None))
    assert all(np.isnan(v) for v in got.values()), got


class FakeTrain(NamedTuple):
    params: dict
    timesteps: jax.Array
    n_updates: jax.Array
    grad_steps: jax.Array


def fake_setup(idx=(0, 1), has_won=True, evaluate=None):
    env = SimpleNamespace(agents=AGENTS, has_won=has_won)
    return Setup(config={}, env=env, agents=None, learner=None, idx=None if idx is None else np.asarray(idx),
                 evaluate=evaluate, num_agents=N, num_trained=N if idx is None else len(idx))


def test_episode_stats_average_the_episodes_that_ended():
    T, B = 5, 6
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    agent_return = jax.random.normal(ks[0], (T, B, N))
    done = jax.random.bernoulli(ks[1], 0.3, (T, B))
    won = jax.random.bernoulli(ks[2], 0.5, (T, B))      # also set on steps that did not end an episode
    stats, n = episode_stats(fake_setup(), agent_return, done, won, log_agents=True)
    r, d, w = np.asarray(agent_return), np.asarray(done), np.asarray(won)
    ended = r[d]                                                      # (episodes, N)
    assert int(n) == len(ended) > 2 and (w & ~d).any() and (w & d).any() and (~w & d).any()
    means = ended.mean(0)
    want = {"returned_episode_returns": means[:2].sum(),             # the agents that learn (0 and 1)
            "returned_won_episode": w[d].mean(), "returned_episode_returns_team_red": means[:2].sum(),
            **{f"returned_episode_returns_{a}": means[i] for i, a in enumerate(AGENTS)}}
    assert sorted(stats) == sorted(want)
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(stats[k]), v, rtol=1e-5, err_msg=k)
    stats, _ = episode_stats(fake_setup(idx=None, has_won=False), agent_return, done, won, log_agents=False)
    assert sorted(stats) == ["returned_episode_returns"]
    np.testing.assert_allclose(np.asarray(stats["returned_episode_returns"]), means.sum(), rtol=1e-5)


def test_record_carries_metrics_and_evaluates_every_test_every_and_at_the_last_update():
    """Episode metrics are carried while no episode ends; the greedy evaluation runs at updates 0, 3, 6
    (TEST_EVERY = 3) and at the last one (7), with key eval_key(test_rng, update), and its values are
    carried in between."""
    def evaluate(key, params):
        x = jax.random.uniform(key) + params
        return {"test_returned_episode_returns": x, "test_returned_episode_returns_std": 2 * x}

    setup = fake_setup(evaluate=evaluate)
    cfg = {"TEST_EVERY": 3, "NUM_UPDATES": 8, "TEST_DURING_TRAINING": True, "DEBUG": False}
    test_rng = jax.random.PRNGKey(42)
    nan = jnp.float32(jnp.nan)
    last = {"returned_episode_returns": nan, "test_returned_episode_returns": nan,
            "test_returned_episode_returns_std": nan}
    rec = jax.jit(lambda last, stats, n, u, train: record(cfg, setup, last, stats, n, u, test_rng, train,
                                                          jnp.float32(1.5), jnp.float32(-2.5), jnp.float32(0.3)))
    n_done = [0, 2, 0, 0, 1, 0, 0, 0]
    carried_return, tested = np.nan, None
    for u in range(8):
        train = FakeTrain(params={"agent": jnp.float32(100 * u)}, timesteps=jnp.int32(10 * u),
                          n_updates=jnp.int32(u + 1), grad_steps=jnp.int32(2 * u))
        last, m = rec(last, {"returned_episode_returns": jnp.float32(u)}, jnp.int32(n_done[u]), jnp.int32(u), train)
        m = jax.tree.map(np.asarray, m)
        if n_done[u]:
            carried_return = u
        np.testing.assert_equal(m["returned_episode_returns"], np.float32(carried_return))
        if u in (0, 3, 6, 7):
            tested = float(jax.random.uniform(eval_key(test_rng, u))) + 100 * u
        np.testing.assert_allclose(m["test_returned_episode_returns"], tested, rtol=1e-6)
        np.testing.assert_allclose(m["test_returned_episode_returns_std"], 2 * tested, rtol=1e-6)
        assert (m["env_step"], m["update_steps"], m["grad_steps"]) == (10 * u, u + 1, 2 * u)
        assert (float(m["loss"]), float(m["qvals"]), float(m["epsilon"])) == (1.5, -2.5, np.float32(0.3))


def test_test_epsilon_acts_at_random_among_available_actions():
    """TEST_EPSILON: on the two-step game with all-zero Q-values the greedy team always takes action 0 (state
    2A: 7 to each agent, a team return of 14); at ε = 1 agent 0 picks 2A or 2B at random and 2B pays the mean of
    [[0, 1], [1, 8]], so the mean team return is 2 (7 + 2.5) / 2 = 9.5 (standard error 0.23 over 512 episodes;
    asserted within 0.7)."""
    from envs import TwoStepGame
    env = CTRolloutManager(TwoStepGame(), 512)
    hidden = lambda b: jnp.zeros((b, 2, 0))   # noqa: E731
    zero = lambda params, h, obs, first: (h, jnp.zeros(obs.shape[:-1] + (2,)))   # noqa: E731
    greedy = jax.jit(make_greedy_eval(env, zero, hidden, 3))(jax.random.PRNGKey(0), None)
    noisy = jax.jit(make_greedy_eval(env, zero, hidden, 3, epsilon=1.0))(jax.random.PRNGKey(0), None)
    assert float(greedy["test_returned_episode_returns"]) == 14.0
    assert abs(float(noisy["test_returned_episode_returns"]) - 9.5) < 0.7
