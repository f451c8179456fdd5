"""The one interface every backend implements, checked against the SMat I/O contract, for every graph of it.

An opened backend runs one graph of the contract, its *role* (:data:`smat_deploy.contract.ROLES`): the whole
model (``image, prompt, state -> alpha``), the interactive pair's encoder (``image -> embedding``) or its
decoder (``embedding, prompt, state -> alpha``). :meth:`Backend.infer` takes the role's inputs by name, already
in the contract's form (float32, contiguous; numpy arrays, torch tensors on one device, or what the same
backend's encoder returned), and returns its outputs by name as whatever the runtime naturally produces; an
encoder's outputs stay on the device that made them. :meth:`Backend.run` is the whole model's call.
:class:`~smat_deploy.runtime.Runtime` (the whole model) and :class:`~smat_deploy.runtime.Predictor` (the pair)
do the conversions on both sides.

A backend is one file with one :class:`Backend` subclass that declares what it is (name, file
types, devices, options, the Triton platform it maps to) plus one line in
:mod:`smat_deploy.runtime.registry`; that gives both ``Runtime`` and ``Predictor``. Its module must import
without its optional package: the package is imported when the backend opens an engine, and
:meth:`Backend.unavailable_reason` says in one line why it cannot run here. Nothing in this module imports PyTorch.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from smat_deploy.contract import (
    CONTRACT_INPUTS,
    CONTRACT_OUTPUTS,
    MIN_SIDE,
    ROLES,
    TensorSpec,
    canonical_precision,
    contract_problems,
    manifest_path_for,
    manifest_role,
    read_manifest,
)
from smat_deploy.errors import SmatError
from smat_deploy.runtime.memory import CONSERVATIVE, PAIR_PROFILES, PROFILES, MemoryEstimate, MemoryProfile

#: A numpy array or a torch tensor (torch is never imported here to say so).
Array = Any


def check_contract(
    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], source: str, role: str = "whole"
) -> None:
    """Raise one :class:`SmatError` naming every way ``source`` differs from ``role``'s graph of the contract."""
    if problems := contract_problems(inputs, outputs, role):
        what = "the SMat contract" if role == "whole" else f"the SMat contract's {role}"
        raise SmatError(f"{source} does not match {what} ({ROLES[role].meaning}): " + "; ".join(problems))


def file_role(path: str | os.PathLike[str]) -> str | None:
    """The role a model file's manifest gives it (``whole``, ``encoder``, ``decoder``), or None without one."""
    try:
        manifest = read_manifest(manifest_path_for(path))
    except (OSError, ValueError):
        return None
    return manifest_role(manifest) if isinstance(manifest, dict) else None


def profile_for_onnx(path: Path, runtime: str, role: str = "whole") -> MemoryProfile:
    """The memory profile of ``runtime`` (``onnxruntime``) on an ONNX file: fused attention or not, float32 or not.

    Only the calibrated cases get their own profile (float32 files; the CPU graphs, whose attention is one
    ``com.microsoft.MultiHeadAttention`` per block); other precisions get the conservative one. A half of the
    interactive pair (``role`` ``encoder`` or ``decoder``) gets the pair's profiles.
    """
    import onnx

    precision = sidecar_precision(path)[0]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable here: the backend reports the file itself when it loads it
        return CONSERVATIVE
    fused = any(node.op_type == "MultiHeadAttention" for node in model.graph.node)
    if precision not in ("float32", "float32_cpu", "int8_cpu", "int8"):
        return CONSERVATIVE
    return (PROFILES if role == "whole" else PAIR_PROFILES)[f"{runtime}-fused" if fused else runtime]


def is_installed(package: str) -> bool:
    """Whether ``package`` can be found without importing it; a finder refusing it (an import blocker) counts as no."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a finder raised, or sys.modules holds the name without a spec
        return False


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

    @property
    def fixed(self) -> bool:
        """The engine takes one exact height or width (a fixed-size export)."""
        return self.height[0] == self.height[1] or self.width[0] == self.width[1]

    def as_dict(self) -> dict:
        return {name: list(getattr(self, name)) for name in ("batch", "height", "width")}


def _range(low: int, high: int | None) -> str:
    return f">= {low}" if high is None else (f"exactly {low}" if low == high else f"{low}..{high}")


def static_limits(inputs: Sequence[TensorSpec], role: str = "whole") -> Limits:
    """Limits implied by a model file's declared photo-sized input (``image``; the decoder's ``prompt``): fixed
    sizes pin a dimension, names leave it free."""
    image = next(spec for spec in inputs if spec.name == ROLES[role].sized)

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
    return canonical_precision(str(manifest.get("precision", "unknown"))), manifest_path


@dataclass(frozen=True)
class BackendOption:
    """One option a backend takes: its type (``int``, ``str`` or ``list`` of str) and one line of help."""

    kind: type
    help: str

    def parse(self, backend: str, name: str, value: object) -> object:
        """``value`` (a Python value, or text from the command line) as this option's type, or one clear error."""
        if self.kind is list:
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
                raise SmatError(f"backend option {name} of {backend} is a list of names, got {value!r}")
            return list(value)
        if self.kind is int:
            try:
                number = int(value)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                raise SmatError(f"backend option {name} of {backend} is a whole number, got {value!r}") from None
            if isinstance(value, float | bool) or number < 0:
                raise SmatError(f"backend option {name} of {backend} is a whole number >= 0, got {value!r}")
            return number
        if not isinstance(value, str):
            raise SmatError(f"backend option {name} of {backend} is text, got {value!r}")
        return value


#: The option several backends share, declared once.
THREADS = BackendOption(int, "intra-op threads (default: the runtime's own choice, one per core)")


@dataclass
class Backend(ABC):
    """An opened engine. Subclasses declare the class attributes and implement :meth:`open` and :meth:`run`."""

    #: Short name: ``--backend NAME``, ``runtime.info.backend`` and the bench table.
    name: ClassVar[str]
    #: One line: what it runs and with what.
    summary: ClassVar[str] = ""
    #: File suffixes this backend opens (lower case, with the dot).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: Device kinds it can run on: ``cpu`` and/or ``cuda``.
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: The options :meth:`open` takes beyond ``device``: name -> declaration.
    options: ClassVar[Mapping[str, BackendOption]] = {}
    #: ``pip install`` hint for its optional package.
    install: ClassVar[str] = ""
    #: ``(Triton platform, file name in a model version folder)``, or None when Triton does not run its files.
    triton_platform: ClassVar[tuple[str, str] | None] = None

    source: str
    precision: str
    device: str
    providers: list[str]
    inputs: tuple[TensorSpec, ...] = CONTRACT_INPUTS
    outputs: tuple[TensorSpec, ...] = CONTRACT_OUTPUTS
    limits: Limits = field(default_factory=Limits)
    details: dict = field(default_factory=dict)
    #: How this runtime spends memory on SMat (:mod:`smat_deploy.runtime.memory`); chosen when the engine opens.
    memory_profile: MemoryProfile = CONSERVATIVE
    #: The graph of the contract it runs: ``whole``, ``encoder`` or ``decoder``.
    role: str = "whole"
    #: What the runtime computes in when that is below the file's precision (OpenVINO's ``bf16``/``f16``
    #: inference precision on a float32 file); None when it computes in the file's precision.
    compute_precision: str | None = None

    @classmethod
    def accepts(cls, engine: object) -> bool:
        """Whether ``engine`` (a path, a name, an object) is something this backend opens: by default its suffix."""
        return isinstance(engine, str | os.PathLike) and Path(engine).suffix.lower() in cls.suffixes

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """One line saying why this backend cannot run here (a missing package, no GPU); None when it can."""
        return None

    @classmethod
    def check_file(cls, path: Path) -> None:
        """A cheap check of a file's declared I/O against the contract, without loading the engine (default: none)."""
        return None

    @classmethod
    @abstractmethod
    def open(cls, engine: object, *, device: str, role: str = "whole", **options: Any) -> Backend:
        """Load ``engine`` as ``role``'s graph on ``device`` with this backend's ``options``; check it against the
        contract."""

    @classmethod
    def open_pair(cls, encoder: object, decoder: object, *, device: str, **options: Any) -> tuple[Backend, Backend]:
        """The interactive pair: its encoder and its decoder, each opened as its role (a backend that can share
        work between the two, such as the torch engine's one model, overrides it)."""
        return (
            cls.open(encoder, device=device, role="encoder", **options),
            cls.open(decoder, device=device, role="decoder", **options),
        )

    @abstractmethod
    def infer(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        """The role's inputs by name -> its outputs by name (see the module's text).

        Must be safe to call from several threads at once.
        """

    def run(self, image: Array, prompt: Array, state: Array) -> Array:
        """The whole model: contract-shaped inputs (all numpy, or all torch on one device) -> ``alpha [B,1,H,W]``."""
        return self.infer({"image": image, "prompt": prompt, "state": state})["alpha"]

    def estimate_memory(self, batch: int, height: int, width: int) -> MemoryEstimate:
        """The predicted peak working memory of one call of this role on ``batch x height x width`` photos (MB).

        From :attr:`memory_profile` by default; a backend that can ask its engine (TensorRT) overrides it.
        """
        return self.memory_profile.estimate(batch, height, width, self.role)

    def raw_call(self) -> Callable[[dict], object] | None:
        """The engine's own call on a numpy feed, without this wrapper (bench times the wrapper against it)."""
        return None
