"""The resolved config's AGENT_TYPE against the env's observations (part of
:func:`purejaxql.config.resolve_config`, with the env): recurrent agents take vectors, convolutional ones
images their convolutions fit."""
from __future__ import annotations

from purejaxql.config import RECURRENT_AGENT_TYPES, ConfigError

__all__ = ["check_agent_inputs"]


def check_agent_inputs(cfg, env) -> None:
    """AGENT_TYPE against the observations (with the env): recurrent agents take each observation as one
    vector (an image (H, W, C) is refused); cnn agents need one CNN_KERNEL_SIZES and CNN_STRIDES entry per
    CNN_CHANNELS entry and image observations of one shape for every agent, which the convolutions fit."""
    agent_type = cfg.get("AGENT_TYPE")
    if agent_type == "cnn":
        for key in ("CNN_CHANNELS", "CNN_KERNEL_SIZES", "CNN_STRIDES"):
            if key == "CNN_STRIDES" and cfg.get(key) is None:
                cfg[key] = [1] * len(cfg["CNN_CHANNELS"])   # (a list by now)
            v = cfg[key]
            if not isinstance(v, (list, tuple)) or not v or any(isinstance(x, bool) or not isinstance(x, int)
                                                                or x <= 0 for x in v):
                raise ConfigError(f"{key} must be a non-empty list of positive integers, got {v!r}")
            cfg[key] = list(v)
        if cfg.get("CNN_PADDING", "VALID") not in ("VALID", "SAME"):
            raise ConfigError(f"CNN_PADDING must be 'VALID' or 'SAME', got {cfg['CNN_PADDING']!r}")
        if not len(cfg["CNN_CHANNELS"]) == len(cfg["CNN_KERNEL_SIZES"]) == len(cfg["CNN_STRIDES"]):
            raise ConfigError(f"CNN_CHANNELS ({cfg['CNN_CHANNELS']}), CNN_KERNEL_SIZES ({cfg['CNN_KERNEL_SIZES']}) "
                              f"and CNN_STRIDES ({cfg['CNN_STRIDES']}) must have one entry per convolution")
    from purejaxql.environments import space_shape
    shapes = {a: space_shape(env.observation_space(a)) for a in getattr(env, "agents", [])}
    for agent, shape in shapes.items():
        if agent_type in RECURRENT_AGENT_TYPES and len(shape) > 1:
            raise ConfigError(f"AGENT_TYPE={agent_type} (a recurrent agent) needs vector observations, but agent "
                              f"{agent!r} observes an array of shape {shape}; use AGENT_TYPE=ff (it sees the "
                              "observation flattened)")
        if agent_type == "cnn" and len(shape) != 3:
            raise ConfigError(f"AGENT_TYPE=cnn needs image observations (H, W, C), but agent {agent!r} observes "
                              f"an array of shape {shape}; use AGENT_TYPE=ff or rnn")
        if agent_type == "cnn" and _conv_out(min(shape[:2]), cfg) < 1:
            raise ConfigError(f"CNN_KERNEL_SIZES {cfg['CNN_KERNEL_SIZES']} with CNN_STRIDES {cfg['CNN_STRIDES']} do "
                              f"not fit the {shape[0]} x {shape[1]} observation image (a VALID convolution of size "
                              "k and stride s turns n rows into (n - k) // s + 1)")
    if agent_type == "cnn" and len(set(shapes.values())) > 1:
        raise ConfigError(f"AGENT_TYPE=cnn needs one observation shape for every agent, got {shapes}")


def _conv_out(n: int, cfg) -> int:
    for k, s in zip(cfg["CNN_KERNEL_SIZES"], cfg["CNN_STRIDES"]):
        if cfg.get("CNN_PADDING", "VALID") == "SAME":
            n = -(-n // s)
        else:
            n = (n - k) // s + 1 if n >= k else 0
    return n
