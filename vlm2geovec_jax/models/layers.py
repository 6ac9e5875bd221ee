"""Building blocks shared by the vision tower and the language model.

Every parameter carries ``logical_axes`` metadata (read by ``vlm2geovec_jax.sharding``); numerics follow
transformers' Qwen2-VL (norms in float32, softmax in float32) so float32 parity is exact to rounding.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


INIT_STD = 0.02  # transformers' initializer_range for Qwen2-VL


class Dense(nnx.Module):
    """y = x @ kernel (+ bias); kernel stored [in, out] (transposed from torch's Linear.weight)."""

    def __init__(self, in_features: int, out_features: int, *, axes: tuple[str, str], use_bias: bool,
                 dtype: jnp.dtype, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(INIT_STD)
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype), logical_axes=axes)
        self.bias = (nnx.Param(jnp.zeros((out_features,), param_dtype), logical_axes=(axes[1],))
                     if use_bias else None)
        self.dtype = dtype
        # LoRA / DoRA adapters, attached by models/lora.py (None: a plain Dense).
        self.lora_a, self.lora_b, self.dora_magnitude = nnx.data(None), nnx.data(None), nnx.data(None)
        self.lora_scale = 0.0

    def effective_kernel(self) -> jax.Array:
        """The weight the layer applies: base, plus scale * A @ B, DoRA-renormalised (float32)."""
        kernel = self.kernel[...].astype(jnp.float32)
        if self.lora_a is None:
            return kernel
        kernel = kernel + self.lora_scale * jnp.matmul(self.lora_a[...], self.lora_b[...])
        if self.dora_magnitude is not None:
            kernel = kernel * (self.dora_magnitude[...] / jnp.linalg.norm(kernel, axis=-2))[..., None, :]
        return kernel

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        if self.dora_magnitude is not None:  # DoRA's column norm needs the whole adapted weight
            y = jnp.dot(x, self.effective_kernel().astype(self.dtype))
        else:
            y = jnp.dot(x, self.kernel[...].astype(self.dtype))
            if self.lora_a is not None:  # low-rank path: never materialises the adapted weight
                y = y + self.lora_scale * jnp.dot(jnp.dot(x, self.lora_a[...].astype(self.dtype)),
                                                  self.lora_b[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """Qwen2's RMSNorm: normalise in float32, cast back, then scale (in that order, as transformers does)."""

    def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm with weight and bias, computed in float32 (torch does the same for half inputs)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype: jnp.dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), logical_axes=("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


# ---- rematerialisation -------------------------------------------------------------------------------------

def _remat_policies() -> dict[str, Callable | None]:
    cp = jax.checkpoint_policies
    return {
        "none": None,  # no remat: keep every activation (fastest, most memory)
        "full": cp.nothing_saveable,  # keep only the layer inputs
        "save_dots": cp.dots_saveable,
        "save_dots_no_batch": cp.dots_with_no_batch_dims_saveable,
        "save_attn_out": cp.save_only_these_names("attn_out"),
    }


def scan_layers(layers: nnx.Module, carry: jax.Array, *args, remat_policy: str = "none") -> jax.Array:
    """Runs a stack of identical layers (parameters stacked on axis 0) with ``lax.scan``.

    One layer is traced and compiled once, whatever the depth. ``remat_policy`` names a jax.checkpoint policy
    applied to each layer, as in MaxText.
    """
    graphdef, state = nnx.split(layers)

    def body(x, layer_state):
        return nnx.merge(graphdef, layer_state)(x, *args), None

    policies = _remat_policies()
    if remat_policy not in policies:
        raise ValueError(f"unknown remat_policy {remat_policy!r}; known: {sorted(policies)}")
    if remat_policy != "none":
        body = jax.checkpoint(body, policy=policies[remat_policy], prevent_cse=False)
    out, _ = jax.lax.scan(body, carry, state)
    return out


def stacked(make: Callable[[nnx.Rngs], nnx.Module], num: int, rngs: nnx.Rngs) -> nnx.Module:
    """``num`` independently initialised copies of a layer, parameters stacked on a leading 'layers' axis."""

    @nnx.split_rngs(splits=num)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers", "logical_axes": "layers"})
    def make_all(r: nnx.Rngs) -> nnx.Module:
        return make(r)

    return make_all(rngs)

