"""Where users import the environment wrapper from: ``from purejaxql.utils import CTRolloutManager``. The code
lives in :mod:`purejaxql.environments` (the environment side in one place)."""
from purejaxql.environments import CTRolloutManager, space_dim, stack_agents, time_limit_truncates, unstack_agents

__all__ = ["CTRolloutManager", "space_dim", "stack_agents", "unstack_agents", "time_limit_truncates"]
