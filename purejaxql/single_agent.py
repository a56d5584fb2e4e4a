"""What every single-agent adapter shares (purejaxql.gymnax_env, craftax_env, atari_env): one agent,
``agent_0``, whose spaces are the wrapped env's, and episode ends that say which ones are time limits."""
from __future__ import annotations

__all__ = ["AGENT", "TeamOfOne"]

AGENT = "agent_0"


class TeamOfOne:
    """Base of the single-agent adapters: the JaxMARL ``MultiAgentEnv`` attributes of a one-agent team.
    A subclass sets ``name``, ``max_steps``, ``_observation_space`` and ``_action_space`` in its constructor
    and returns ``infos["truncated"]`` from its steps."""

    agents = [AGENT]
    num_agents = 1
    time_limit_truncates = True   # an episode cut by the env's time limit is a truncation ...
    reports_truncation = True     # ... marked by infos["truncated"] (purejaxql.environments.step_envs)

    def observation_space(self, agent: str = AGENT):
        return self._observation_space

    def action_space(self, agent: str = AGENT):
        return self._action_space
