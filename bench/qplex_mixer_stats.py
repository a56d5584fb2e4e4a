"""What a trained QPLEX mixer does on states of its env: the transformation weights w_i(s) and the
advantage weights λ_i(s, u) (purejaxql/qplex.py), over the states of uniformly random play.

    python bench/qplex_mixer_stats.py RUN/checkpoints/seed0_*.safetensors [--envs 64] [--steps 100]

One line per checkpoint: mean, median and max of w and of λ over envs x steps x agents (the joint action u
given to λ is the random one played). A healthy mixer keeps λ near or above 1 (the chosen joint action
weighs in Q_tot); λ near 0 everywhere makes Q_tot = Σ_i V'_i, blind to the joint action, and a large w
multiplies every change of the agents' Q-values in Q_tot.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from purejaxql.checkpoint import load_checkpoint
from purejaxql.environments import CTRolloutManager, make_env, reset_envs, step_envs
from purejaxql.qplex import QPlexMixer


def random_play_states(cfg, envs: int, steps: int, seed: int):
    """(steps*envs, S) global states and (steps*envs, N) joint actions of uniformly random available play,
    stepped as training steps its envs (purejaxql.environments.reset_envs / step_envs) in one scan."""
    team = CTRolloutManager(make_env(cfg), batch_size=envs)

    def play(rng):
        def step(carry, k):
            k_act, k_env = jax.random.split(k)
            actions = jax.random.categorical(k_act, jnp.where(carry.avail > 0, 0.0, -jnp.inf))   # (B, N)
            new, _ = step_envs(team, k_env, carry, actions, carry.hidden)
            return new, (carry.state, actions)
        carry = reset_envs(team, rng, jnp.zeros((envs, team.num_agents, 0)))
        _, (states, actions) = jax.lax.scan(step, carry, jax.random.split(rng, steps))
        return states.reshape(steps * envs, -1), actions.reshape(steps * envs, -1)   # (T, B, ..) -> (T*B, ..)

    states, actions = jax.jit(play)(jax.random.PRNGKey(seed))
    return states, actions, team


def mixer_stats(path: str, envs: int, steps: int, seed: int) -> dict:
    params, info = load_checkpoint(path)
    cfg = info["config"]
    if info.get("algorithm") != "qplex":
        raise SystemExit(f"{path}: a {info.get('algorithm')} checkpoint, not qplex")
    s, u, team = random_play_states(cfg, envs, steps, seed)
    net = QPlexMixer(team.num_agents, team.max_action_space, cfg["MIXER_HYPERNET_HIDDEN_DIM"], cfg["QPLEX_NUM_KERNEL"])
    q = jnp.zeros(u.shape)                    # the weights depend on the state and the joint action only
    _, inter = net.apply(params["mixer"], q, q, u, s, mutable=["intermediates"])
    out = {}
    for name in ("w", "lam"):
        x = np.asarray(inter["intermediates"][name][0])
        out[name] = (float(x.mean()), float(np.median(x)), float(x.max()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for path in args.checkpoints:
        st = mixer_stats(path, args.envs, args.steps, args.seed)
        print(f"{path}: " + " | ".join(f"{n} mean {m:.3g} median {md:.3g} max {mx:.3g}"
                                       for n, (m, md, mx) in st.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
