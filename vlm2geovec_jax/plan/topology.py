"""Accelerator topologies that ``vlm2geovec plan`` compiles for, and the published figures of their chips.

TPU topologies come from libtpu (``jax.experimental.topologies.get_topology_desc``): real TPU device
descriptions with no TPU attached, so XLA:TPU compiles the real program on a CPU-only machine. GPUs cannot be
described that way; for them plan gives the analytic estimate only.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One chip's published figures: dense bf16 peak, HBM capacity and HBM bandwidth."""

    name: str
    device_kind: str            # what jax reports as Device.device_kind
    peak_bf16_flops: float      # FLOP/s
    hbm_bytes: int
    hbm_bytes_per_s: float
    source: str                 # the vendor page the figures are from


CHIPS = {
    "v4": Chip("TPU v4", "TPU v4", 275e12, 32 * GIB, 1.2e12, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", "TPU v5 lite", 197e12, 16 * GIB, 0.819e12, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", "TPU v5", 459e12, 95 * GIB, 2.765e12, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e (Trillium)", "TPU v6 lite", 918e12, 32 * GIB, 1.64e12,
                "https://cloud.google.com/tpu/docs/v6e"),
    "h100": Chip("H100 SXM", "NVIDIA H100 80GB HBM3", 989.4e12, 80 * 10 ** 9, 3.35e12,
                 "https://www.nvidia.com/en-us/data-center/h100/"),
    "h200": Chip("H200 SXM", "NVIDIA H200", 989.4e12, 141 * 10 ** 9, 4.8e12,
                 "https://www.nvidia.com/en-us/data-center/h200/"),
}
TPU_GENERATIONS = ("v4", "v5e", "v5p", "v6e")
EXAMPLES = ("v4:2x2x1", "v5e:2x2", "v5e:4x4", "v5p:2x2x1", "v6e:2x2", "v6e:2x4", "h100:8", "h200:8")


class TopologyError(ValueError):
    """A topology name plan cannot use (the message lists the known names)."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named topology: its chip, chip count and (TPU only) the device descriptions to compile for."""

    name: str
    chip: Chip
    devices: tuple = ()

    @property
    def num_chips(self) -> int:
        return len(self.devices) if self.devices else int(self.name.split(":")[1])

    @property
    def is_tpu(self) -> bool:
        return bool(self.devices)

    @property
    def device_kind(self) -> str:
        return self.devices[0].device_kind if self.devices else self.chip.device_kind


def known_names() -> str:
    return (f"generations {', '.join(CHIPS)}; e.g. {', '.join(EXAMPLES)} (TPU: GENERATION:SHAPE as libtpu "
            "names it; GPU: GENERATION:CHIPS, analytic estimate only)")


def get_topology(name: str) -> Topology:
    """The topology called ``name`` (e.g. ``v5e:4x4``, ``v5p:2x2x1``, ``h100:8``)."""
    generation, _, shape = name.partition(":")
    chip = CHIPS.get(generation.lower())
    if chip is None or not shape:
        raise TopologyError(f"--topology {name!r}: unknown topology; known: {known_names()}")
    if generation.lower() not in TPU_GENERATIONS:
        if not shape.isdigit() or int(shape) < 1:
            raise TopologyError(f"--topology {name!r}: a GPU topology is GENERATION:CHIPS, e.g. h100:8")
        return Topology(name, chip)
    if not re.fullmatch(r"\d+(x\d+){1,2}", shape):
        raise TopologyError(f"--topology {name!r}: TPU shape must look like 2x2 or 2x2x1; known: {known_names()}")
    return Topology(name, chip, tuple(_tpu_devices(name)))


def _tpu_devices(name: str) -> list:
    # plan only compiles: it never claims a TPU, so several plans (or a plan beside a TPU job) may load libtpu.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise TopologyError('compiling for a TPU topology needs libtpu: pip install -e ".[tpu]"') from None
    from jax.experimental import topologies
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
    except Exception as e:  # libtpu's error for a shape it does not know
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TopologyError(f"--topology {name!r}: libtpu refused it ({first}); known: {known_names()}") from None


@functools.lru_cache(maxsize=None)
def usable_hbm_bytes(topology: Topology) -> int:
    """HBM one device may use, as XLA:TPU states it when refusing a program far too large for any chip
    (a v5e chip: 15.75 GiB of its 16); the published capacity for GPUs."""
    if not topology.is_tpu:
        return topology.chip.hbm_bytes
    import jax
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding

    def too_big(x):  # two 16 GiB temporaries and a 256 GiB result
        a = jnp.sin(jnp.broadcast_to(x, (2 ** 18, 2 ** 14)))
        return a @ jnp.cos(a[::-1]).T

    x = jax.ShapeDtypeStruct((2 ** 14,), jnp.float32, sharding=SingleDeviceSharding(topology.devices[0]))
    try:
        jax.jit(too_big).lower(x).compile()
    except Exception as e:  # RESOURCE_EXHAUSTED: ... exceeds available HBM (15.75G).
        found = re.search(r"available HBM \(([\d.]+)([KMGT])\)", str(e))
        if found:
            return int(float(found.group(1)) * 1024 ** ("KMGT".index(found.group(2)) + 1))
    return topology.chip.hbm_bytes
