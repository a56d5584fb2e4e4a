"""Batch Renormalisation (Ioffe 2017), the normalisation of the original PQN Craftax and CrossQ networks
(``NORM_TYPE=batch_renorm``).

BatchNorm normalises a training batch with the batch's own statistics and an evaluation input with running
ones, so a network trained in one regime acts in the other. Batch Renormalisation trains with a correction
that keeps the two consistent. For features x of a batch with mean μ_B and std σ_B = sqrt(var_B + ε), and
running mean μ and std σ = sqrt(var + ε):

    training:    x̂ = (x − μ_B) / σ_B · r + d,   r = sg(clip(σ_B / σ, 1/r_max, r_max)),
                                                 d = sg(clip((μ_B − μ) / σ, −d_max, d_max))
    evaluation:  x̂ = (x − μ) / σ
    output:      y = γ · x̂ + β

(sg: no gradient through r and d). For the first ``warmup_steps`` training calls r = 1 and d = 0 (plain
BatchNorm) while the running statistics settle. Every training call moves them:
μ ← μ + (1 − m)(μ_B − μ), var ← var + (1 − m)(var_B − var), m = ``momentum`` (var_B biased, as flax's
BatchNorm). Defaults as the original PQN Craftax code: m = 0.999, ε = 1e-3, r_max = 3, d_max = 5, 1000
warm-up calls. The running statistics and the
call count live in the ``batch_stats`` collection, like ``flax.linen.BatchNorm``'s, so the loops carry them
the same way. Statistics are taken over every axis but the last (features).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

__all__ = ["BatchRenorm"]


class BatchRenorm(nn.Module):
    use_running_average: bool = False
    momentum: float = 0.999
    epsilon: float = 1e-3
    r_max: float = 3.0
    d_max: float = 5.0
    warmup_steps: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        steps = self.variable("batch_stats", "steps", jnp.zeros, (), jnp.int32)
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        if self.use_running_average:
            x_hat = (x - mean.value) / jnp.sqrt(var.value + self.epsilon)
        else:
            axes = tuple(range(x.ndim - 1))
            mu_b, var_b = x.mean(axes), x.var(axes)
            sigma_b = jnp.sqrt(var_b + self.epsilon)
            sigma = jnp.sqrt(var.value + self.epsilon)
            r = jnp.clip(sigma_b / sigma, 1.0 / self.r_max, self.r_max)
            d = jnp.clip((mu_b - mean.value) / sigma, -self.d_max, self.d_max)
            warm = steps.value < self.warmup_steps
            r = jax.lax.stop_gradient(jnp.where(warm, 1.0, r))
            d = jax.lax.stop_gradient(jnp.where(warm, 0.0, d))
            x_hat = (x - mu_b) / sigma_b * r + d
            if not self.is_initializing():
                mean.value = mean.value + (1.0 - self.momentum) * jax.lax.stop_gradient(mu_b - mean.value)
                var.value = var.value + (1.0 - self.momentum) * jax.lax.stop_gradient(var_b - var.value)
                steps.value = steps.value + 1
        return x_hat * scale + bias
