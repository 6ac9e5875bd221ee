"""Meshes and the one logical-axis rules table.

Model code names logical axes only (``('embed', 'mlp')`` on a parameter, ``('act_batch', 'act_len',
'act_embed')`` on an activation). This file is the single place that says which mesh axis each logical axis
lands on, so changing the parallelism layout never touches a model file (the MaxText convention).

Mesh axes: ``data`` (pure data parallelism), ``fsdp`` (data parallelism with parameters sharded across it)
and ``tensor`` (tensor parallelism inside a layer).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

LOGICAL_RULES: Rules = (
    # Activations.
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_images", ("data", "fsdp")),
    ("act_patches", None),
    # Parameters.
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_mlp", "tensor"),
    ("patch", None),
    ("norm", None),
    ("lora_rank", None),
)


def logical_to_spec(names: Iterable[str | None], rules: Rules = LOGICAL_RULES) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec; a mesh axis is used at most once per spec."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name in names:
        axes = table.get(name) if name is not None else None
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*spec)


def make_mesh(shape: Mapping[str, int] | Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types; one size may be -1 to take the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [shape.get(a, 1) for a in MESH_AXES] if isinstance(shape, Mapping) else list(shape)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh shape {sizes} must give one size per axis {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh shape {sizes}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh shape {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                         f"have {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES,
                axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def constrain(x: jax.Array, names: Sequence[str | None], rules: Rules = LOGICAL_RULES) -> jax.Array:
    """with_sharding_constraint by logical names; a no-op when no mesh is set (single-device use)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, rules))


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_specs(state: nnx.State, rules: Rules = LOGICAL_RULES) -> nnx.State:
    """PartitionSpecs for every variable of a state, from its ``logical_axes`` metadata (replicated if none)."""
    def spec(var):
        names = var.get_metadata().get("logical_axes")
        return var.replace(logical_to_spec(names, rules) if names else PartitionSpec())
    return jax.tree.map(spec, state, is_leaf=_is_variable)


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = LOGICAL_RULES) -> nnx.State:
    """NamedShardings for every variable of a state on ``mesh``."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), state_specs(state, rules),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))
