"""The one interface every backend implements, and the SMat I/O contract every engine must meet.

A backend gets inputs that are already in the contract's form (float32, ``image [B,3,H,W]``,
``prompt [B,1,H,W]``, ``state [B,1]``, contiguous), either all numpy arrays or all torch tensors on
one device, and returns ``alpha [B,1,H,W]`` as whichever of the two it naturally produces; the
:class:`~smat_deploy.runtime.Runtime` wrapper does the conversions on both sides. Adding a backend
is one file with one :class:`Backend` subclass.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from smat_deploy.errors import SmatError
from smat_deploy.export.manifest import INPUTS, OUTPUTS, manifest_path_for, read_manifest

Array = np.ndarray | torch.Tensor
#: The smallest side the model accepts (one ViT patch).
MIN_SIDE = 14


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as a model file declares it: static sizes are ints, dynamic ones names or None."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


CONTRACT_INPUTS = tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in INPUTS)
CONTRACT_OUTPUTS = tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in OUTPUTS)


def _spec_problems(found: Sequence[TensorSpec], expected: Sequence[TensorSpec], role: str) -> list[str]:
    problems = []
    by_name = {spec.name: spec for spec in found}
    wanted = [spec.name for spec in expected]
    if missing := [name for name in wanted if name not in by_name]:
        problems.append(f"missing {role} {', '.join(missing)}")
    if extra := [spec.name for spec in found if spec.name not in wanted]:
        problems.append(f"unexpected {role} {', '.join(extra)}")
    for want in expected:
        have = by_name.get(want.name)
        if have is None:
            continue
        if have.dtype != want.dtype:
            problems.append(f"{want.name} is {have.dtype}, expected {want.dtype}")
        if len(have.shape) != len(want.shape):
            problems.append(f"{want.name} has rank {len(have.shape)}, expected {len(want.shape)} {list(want.shape)}")
            continue
        for axis, (dim, wanted_dim) in enumerate(zip(have.shape, want.shape, strict=True)):
            if isinstance(wanted_dim, int) and isinstance(dim, int) and dim != wanted_dim:
                problems.append(f"{want.name} axis {axis} is {dim}, expected {wanted_dim}")
    return problems


def check_contract(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], source: str) -> None:
    """Raise one :class:`SmatError` naming every way ``source`` differs from ``image, prompt, state -> alpha``.

    Static sizes where the contract has symbolic ones (a fixed-size export) are allowed; they become
    the engine's :class:`Limits`.
    """
    problems = _spec_problems(inputs, CONTRACT_INPUTS, "input") + _spec_problems(outputs, CONTRACT_OUTPUTS, "output")
    if problems:
        raise SmatError(
            f"{source} does not match the SMat contract (image, prompt, state -> alpha): " + "; ".join(problems)
        )


@dataclass(frozen=True)
class Limits:
    """The batch and image sizes an engine accepts (inclusive; ``None``: no upper bound)."""

    batch: tuple[int, int | None] = (1, None)
    height: tuple[int, int | None] = (MIN_SIDE, None)
    width: tuple[int, int | None] = (MIN_SIDE, None)

    def check(self, batch: int, height: int, width: int, source: str) -> None:
        for what, value, (low, high) in (
            ("batch", batch, self.batch),
            ("height", height, self.height),
            ("width", width, self.width),
        ):
            if value < low or (high is not None and value > high):
                raise SmatError(f"{what} {value} is outside what {source} accepts: {_range(low, high)}")

    def as_dict(self) -> dict:
        return {name: list(getattr(self, name)) for name in ("batch", "height", "width")}


def _range(low: int, high: int | None) -> str:
    return f">= {low}" if high is None else (f"exactly {low}" if low == high else f"{low}..{high}")


def static_limits(inputs: Sequence[TensorSpec]) -> Limits:
    """Limits implied by a model file's declared image shape: fixed sizes pin a dimension, names leave it free."""
    image = next(spec for spec in inputs if spec.name == "image")

    def bound(dim: int | str | None, low: int) -> tuple[int, int | None]:
        return (dim, dim) if isinstance(dim, int) else (low, None)

    return Limits(bound(image.shape[0], 1), bound(image.shape[2], MIN_SIDE), bound(image.shape[3], MIN_SIDE))


def sidecar_precision(path: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """``(precision, manifest path)`` from the sidecar JSON beside a model file (``smat.onnx`` -> ``smat.json``)."""
    if path is None:
        return "unknown", None
    manifest_path = manifest_path_for(path)
    try:
        manifest = read_manifest(manifest_path)
    except (OSError, ValueError) as err:
        raise SmatError(f"cannot read the manifest {manifest_path}: {err}") from None
    if not isinstance(manifest, dict):
        return "unknown (no manifest)", None
    return str(manifest.get("precision", "unknown")), manifest_path


@dataclass
class Backend(ABC):
    """An opened engine. Subclasses set the class attributes and implement :meth:`open` and :meth:`run`."""

    #: Short name shown in ``runtime.info`` and in the bench table.
    name: ClassVar[str]
    #: File suffixes this backend opens (lower case, with the dot).
    suffixes: ClassVar[tuple[str, ...]] = ()

    source: str
    precision: str
    device: str
    providers: list[str]
    inputs: tuple[TensorSpec, ...] = CONTRACT_INPUTS
    outputs: tuple[TensorSpec, ...] = CONTRACT_OUTPUTS
    limits: Limits = field(default_factory=Limits)
    details: dict = field(default_factory=dict)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """One line saying why this backend cannot run here (a missing package, no GPU); None when it can."""
        return None

    @classmethod
    @abstractmethod
    def open(
        cls, engine: object, *, device: str, providers: Sequence[str] | None, threads: int | None, seed: int
    ) -> Backend:
        """Load ``engine`` (a path, or a backend-specific object) and check it against the contract."""

    @abstractmethod
    def run(self, image: Array, prompt: Array, state: Array) -> Array:
        """Contract-shaped inputs (all numpy, or all torch on one device) -> ``alpha [B,1,H,W]``.

        Must be safe to call from several threads at once.
        """


def as_torch(array: Array) -> torch.Tensor:
    """A torch view of a numpy array (a copy only when the array is read-only), or the tensor itself."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def torch_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a torch device, with a one-line error for anything else."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise SmatError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SmatError(f"device {device} requested, but no CUDA GPU is visible to torch")
        index = parsed.index or 0
        if index >= torch.cuda.device_count():
            raise SmatError(f"device {device} requested, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        parsed = torch.device("cuda", index)
    return parsed
