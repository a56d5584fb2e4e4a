"""Small JaxMARL environments with known answers, for tests."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct
from jaxmarl.environments.multi_agent_env import MultiAgentEnv
from jaxmarl.environments.spaces import Box, Discrete


@struct.dataclass
class TwoStepState:
    stage: chex.Array   # 0: first step, 1: state 2A, 2: state 2B
    step: chex.Array


class TwoStepGame(MultiAgentEnv):
    """The two-step game of the QMIX paper (Rashid et al. 2018, §6.1).

    Step 1 (state 1): agent 0's action picks state 2A (action 0) or 2B (action 1); reward 0.
    Step 2: in 2A every joint action pays 7; in 2B the payoff is [[0, 1], [1, 8]]. Then the episode ends.
    Both agents observe the one-hot state and each receives the joint payoff.
    """

    def __init__(self):
        super().__init__(num_agents=2)
        self.agents = ["agent_0", "agent_1"]
        self.max_steps = 2
        self.observation_spaces = {a: Box(0.0, 1.0, (3,)) for a in self.agents}
        self.action_spaces = {a: Discrete(2) for a in self.agents}
        self.payoff_2b = jnp.array([[0.0, 1.0], [1.0, 8.0]])

    def _obs(self, state):
        oh = jax.nn.one_hot(state.stage, 3)
        return {a: oh for a in self.agents}

    def reset(self, key):
        state = TwoStepState(stage=jnp.int32(0), step=jnp.int32(0))
        return self._obs(state), state

    def step_env(self, key, state, actions):
        a0, a1 = actions["agent_0"], actions["agent_1"]
        reward = jnp.where(state.stage == 1, 7.0,
                           jnp.where(state.stage == 2, self.payoff_2b[a0, a1], 0.0))
        next_stage = jnp.where(state.stage == 0, 1 + a0, state.stage)
        done = state.step >= 1
        state = TwoStepState(stage=next_stage, step=state.step + 1)
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        return self._obs(state), state, {a: reward for a in self.agents}, dones, {}


@struct.dataclass
class RecallState:
    cue: chex.Array
    t: chex.Array


class RecallGame(MultiAgentEnv):
    """Memory test: at t = 0 every agent sees a random cue bit; afterwards only the time t/L.
    At the last step (t = L-1) an agent is paid 1 if its action equals the cue. Episodes last L steps.

    Solvable only by an agent whose hidden state carries the cue over the whole episode, so it checks
    that hidden states are stored and restored correctly across update boundaries.
    Observation: [cue if t == 0 else 0, t / L, 1 if t == 0 else 0].
    """

    def __init__(self, length: int = 5, num_agents: int = 2):
        super().__init__(num_agents=num_agents)
        self.agents = [f"agent_{i}" for i in range(num_agents)]
        self.length = length
        self.max_steps = length
        self.observation_spaces = {a: Box(0.0, 1.0, (3,)) for a in self.agents}
        self.action_spaces = {a: Discrete(2) for a in self.agents}

    def _obs(self, state):
        first = (state.t == 0).astype(jnp.float32)
        o = jnp.stack([state.cue * first, state.t / self.length, first])
        return {a: o for a in self.agents}

    def reset(self, key):
        state = RecallState(cue=jax.random.bernoulli(key).astype(jnp.float32), t=jnp.int32(0))
        return self._obs(state), state

    def step_env(self, key, state, actions):
        last = state.t == self.length - 1
        rewards = {a: jnp.where(last, (actions[a] == state.cue.astype(jnp.int32)).astype(jnp.float32), 0.0)
                   for a in self.agents}
        state = RecallState(cue=state.cue, t=state.t + 1)
        dones = {a: last for a in self.agents}
        dones["__all__"] = last
        return self._obs(state), state, rewards, dones, {}


@struct.dataclass
class EchoState:
    last: chex.Array    # (N,) the previous joint action (0 at the start of an episode)
    t: chex.Array


class EchoGame(MultiAgentEnv):
    """Every agent observes the previous joint action, so what each agent did is visible in the data.

    Observation (same for every agent): [one-hot of each agent's previous action (N·A, zero at the start),
    t / max_steps, 1 if t == 0]. Agent i may not take action (t + i) mod A (``get_avail_actions``).
    Reward of agent i: 1 if it repeats its own previous action, else -0.5 · i. Episodes end by a true
    terminal with probability ``p_end`` after each step, or at ``max_steps`` steps by a time limit
    (``time_limit_truncates``), so both kinds of episode end happen.
    """
    time_limit_truncates = True

    def __init__(self, num_agents: int = 3, num_actions: int = 4, max_steps: int = 6, p_end: float = 0.15):
        super().__init__(num_agents=num_agents)
        self.agents = [f"agent_{i}" for i in range(num_agents)]
        self.num_actions, self.max_steps, self.p_end = num_actions, max_steps, p_end
        self.obs_len = num_agents * num_actions + 2
        self.observation_spaces = {a: Box(0.0, 1.0, (self.obs_len,)) for a in self.agents}
        self.action_spaces = {a: Discrete(num_actions) for a in self.agents}

    def _obs(self, state):
        start = state.t == 0
        prev = jnp.where(start, 0.0, jax.nn.one_hot(state.last, self.num_actions).ravel())
        o = jnp.concatenate([prev, jnp.stack([state.t / self.max_steps, start.astype(jnp.float32)])])
        return {a: o for a in self.agents}

    def reset(self, key):
        state = EchoState(last=jnp.zeros((self.num_agents,), jnp.int32), t=jnp.int32(0))
        return self._obs(state), state

    def get_avail_actions(self, state):
        return {a: 1.0 - jax.nn.one_hot((state.t + i) % self.num_actions, self.num_actions)
                for i, a in enumerate(self.agents)}

    def step_env(self, key, state, actions):
        acts = jnp.stack([actions[a] for a in self.agents]).astype(jnp.int32)
        repeat = (acts == state.last) & (state.t > 0)
        rewards = {a: jnp.where(repeat[i], 1.0, -0.5 * i) for i, a in enumerate(self.agents)}
        t = state.t + 1
        done = jax.random.bernoulli(key, self.p_end) | (t >= self.max_steps)
        state = EchoState(last=acts, t=t)
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        return self._obs(state), state, rewards, dones, {}


class ImageGame(MultiAgentEnv):
    """Agents observe an (H, W, C) image (a one-hot of the step in channel 0), for the checks of agents that
    need vector observations. Reward 1 for action 0; episodes last ``max_steps`` steps."""

    def __init__(self, num_agents: int = 2, shape=(4, 4, 2), max_steps: int = 5):
        super().__init__(num_agents=num_agents)
        self.agents = [f"agent_{i}" for i in range(num_agents)]
        self.shape, self.max_steps = tuple(shape), max_steps
        self.observation_spaces = {a: Box(0.0, 1.0, self.shape) for a in self.agents}
        self.action_spaces = {a: Discrete(3) for a in self.agents}

    def _obs(self, t):
        img = jnp.zeros(self.shape).at[0, t % self.shape[1], 0].set(1.0)
        return {a: img for a in self.agents}

    def reset(self, key):
        return self._obs(jnp.int32(0)), jnp.int32(0)

    def step_env(self, key, t, actions):
        t = t + 1
        done = t >= self.max_steps
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        rewards = {a: (actions[a] == 0).astype(jnp.float32) for a in self.agents}
        return self._obs(t), t, rewards, dones, {}


@struct.dataclass
class MatrixState:
    step: chex.Array


class MatrixGame(MultiAgentEnv):
    """A one-step cooperative matrix game: two agents, three actions each, every agent receives
    ``payoff[a_0, a_1]`` and the episode ends. The default payoff is the weighted-QMIX paper's
    (Rashid et al. 2020, §6.1): the optimum 8 sits next to -12 penalties, so a monotonic fit under uniform
    exploration prefers the safe 0 region."""

    def __init__(self, payoff=((8.0, -12.0, -12.0), (-12.0, 0.0, 0.0), (-12.0, 0.0, 0.0))):
        super().__init__(num_agents=2)
        self.agents = ["agent_0", "agent_1"]
        self.max_steps = 1
        self.payoff = jnp.asarray(payoff, jnp.float32)
        self.observation_spaces = {a: Box(0.0, 1.0, (1,)) for a in self.agents}
        self.action_spaces = {a: Discrete(self.payoff.shape[0]) for a in self.agents}

    def _obs(self):
        return {a: jnp.ones((1,)) for a in self.agents}

    def reset(self, key):
        return self._obs(), MatrixState(step=jnp.int32(0))

    def step_env(self, key, state, actions):
        reward = self.payoff[actions["agent_0"], actions["agent_1"]]
        dones = {a: jnp.bool_(True) for a in self.agents + ["__all__"]}
        return self._obs(), MatrixState(step=state.step + 1), {a: reward for a in self.agents}, dones, {}
