"""Baselines the learning tests' thresholds must beat: what a learner that is broken, or denied what it
needs, reaches under the tests' own configs.

    python bench/learning_baselines.py two-step [--seeds 1024]
        untrained (frozen) networks on the two-step game (tests/test_two_step.py's CONFIG): how often
        their greedy joint action already gives team return 14 or 16, and how far their Q-values are
        from the fixed points the test asserts
    python bench/learning_baselines.py mute-speaker [--module qmix_ns] [--seeds 0 1 2] [--unmuted]
        speaker-listener trained as tests/test_learning_ns.py trains it (same CONFIG, seed k =
        PRNGKey(k)), with the speaker's message zeroed in the listener's observation: the most a listener
        that ignores the speaker can reach (--unmuted: the same runs on the real env, for comparison)

Random predators against the frozen prey: ``python bench/random_policy.py MPE_simple_tag_v3 --pretrained
agent_0=pkg:checkpoints/MPE_simple_tag_v3_prey_iql_ps.safetensors``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import jax
import numpy as np

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
sys.path.insert(0, TESTS)  # tests/envs.py and the tests' configs


def two_step(seeds: int):
    import test_two_step as t
    from purejaxql import iql_ps, qmix_ps, vdn_ps

    for alg, module in (("iql", iql_ps), ("vdn", vdn_ps), ("qmix", qmix_ps)):
        train = module.make_train(t.CONFIG, t.TwoStepGame())

        def untrained(rng):
            params = train.init(rng).train.params
            ret = train.evaluate(jax.random.fold_in(rng, 1), params["agent"])["test_returned_episode_returns"]
            return ret, t.q_table(train, params, alg)

        ret, tables = jax.jit(jax.vmap(untrained))(jax.random.split(jax.random.PRNGKey(0), seeds))
        ret, tables = np.asarray(ret), np.asarray(tables)
        err = np.abs(tables - t.fixed_point(alg)).max(axis=(1, 2, 3))
        values, counts = np.unique(ret, return_counts=True)
        share = ", ".join(f"{v:g}: {c / seeds:.3f}" for v, c in zip(values, counts))
        print(f"{alg}: {seeds} untrained networks, greedy team return {share}; max |Q - fixed point| "
              f"min {err.min():.2f}, median {np.median(err):.2f}", flush=True)


def muted_speaker_listener():
    """MPE_simple_speaker_listener_v4 (discrete actions, as make_env builds it) whose listener sees zeros
    where the speaker's message is (the last dim_c = 3 entries of its observation: velocity 2, landmark
    offsets 6, message 3)."""
    from jaxmarl.environments.mpe.simple_speaker_listener import LISTENER, SimpleSpeakerListenerMPE

    class MutedSpeakerListener(SimpleSpeakerListenerMPE):
        def get_obs(self, state):
            obs = super().get_obs(state)
            return {**obs, LISTENER: obs[LISTENER].at[-self.dim_c:].set(0.0)}

    return MutedSpeakerListener(action_type="Discrete")


def mute_speaker(module_name: str, seeds, unmuted: bool, overrides):
    import test_learning_ns as t
    from purejaxql.environments import make_env

    module = importlib.import_module(f"purejaxql.{module_name}")
    config = {**t.CONFIG, **overrides}
    env = make_env(config) if unmuted else muted_speaker_listener()
    train = module.make_train(config, env)
    every = train.config["TEST_EVERY"]
    train = jax.jit(train)
    finals = []
    for seed in seeds:
        start = time.time()
        ret = np.asarray(train(jax.random.PRNGKey(seed))["metrics"]["test_returned_episode_returns"])
        finals.append(ret[-1])
        print(f"{module_name} {'unmuted' if unmuted else 'speaker muted'} seed {seed}: greedy team return "
              f"{ret[0]:.1f} untrained, {ret[-1]:.1f} at the end (max {ret.max():.1f}), "
              f"{time.time() - start:.0f} s; every {every} updates: {np.round(ret[::every], 1).tolist()}", flush=True)
    print(f"{module_name} {'unmuted' if unmuted else 'speaker muted'}: final {np.mean(finals):.1f} ± "
          f"{np.std(finals):.1f} over seeds {list(seeds)}: {np.round(finals, 1).tolist()}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("two-step")
    s.add_argument("--seeds", type=int, default=1024)
    s = sub.add_parser("mute-speaker")
    s.add_argument("--module", default="qmix_ns")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--unmuted", action="store_true")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides (values parsed as YAML), e.g. TOTAL_TIMESTEPS=3e5")
    a = p.parse_args()
    if a.what == "two-step":
        two_step(a.seeds)
    else:
        import yaml
        overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in a.set)}
        mute_speaker(a.module, a.seeds, a.unmuted, overrides)


if __name__ == "__main__":
    main()
