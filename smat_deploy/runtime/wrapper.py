"""``Runtime``: one call for every engine, whatever it is, with the caller's arrays in and out.

``Runtime.open`` picks the backend from what it is given (``.onnx`` -> ONNX Runtime, ``.plan`` /
``.engine`` -> TensorRT, ``"torch"``, a ``.pth``/``.pt`` checkpoint or an SMat module -> the PyTorch
reference), checks the engine against the SMat I/O contract, and ``runtime(image, prompt, state)``
validates the inputs against that contract and the engine's size limits before running it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smat_deploy.errors import SmatError
from smat_deploy.model import SMat
from smat_deploy.runtime.base import Array, Backend
from smat_deploy.runtime.inputs import prepare_inputs, restore_output
from smat_deploy.runtime.onnxrt import OnnxRuntimeBackend
from smat_deploy.runtime.tensorrt import TensorRTBackend
from smat_deploy.runtime.torch_backend import TORCH_ENGINE, TorchBackend

#: Every backend, in the order the documentation lists them. A new backend is one file plus one entry here.
BACKENDS: tuple[type[Backend], ...] = (TorchBackend, OnnxRuntimeBackend, TensorRTBackend)

EngineSpec = str | os.PathLike[str] | SMat


def backend_for(engine: EngineSpec) -> type[Backend]:
    """The backend class that opens ``engine``, from its type or file suffix."""
    if isinstance(engine, SMat) or engine == TORCH_ENGINE:
        return TorchBackend
    if not isinstance(engine, str | os.PathLike):
        raise SmatError(f"an engine is a path, 'torch' or an SMat module, got {type(engine).__name__}")
    suffix = Path(engine).suffix.lower()
    for backend in BACKENDS:
        if suffix in backend.suffixes:
            return backend
    known = ", ".join(f"{s} ({b.name})" for b in BACKENDS for s in b.suffixes)
    raise SmatError(f"unknown engine type {Path(engine).name!r}: expected 'torch' or a file ending in {known}")


@dataclass(frozen=True)
class RuntimeInfo:
    """What an opened engine is and runs on: shown by ``bench`` and ``matte --json``."""

    backend: str
    engine: str
    precision: str
    device: str
    providers: list[str]
    inputs: list[dict]
    outputs: list[dict]
    limits: dict
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "engine": self.engine,
            "precision": self.precision,
            "device": self.device,
            "providers": self.providers,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "limits": self.limits,
            **self.details,
        }


class Runtime:
    """An SMat engine behind one call: ``alpha = runtime(image, prompt=None, state=None)``.

    - ``image``: one photo ``HxWx3`` (uint8, or float in [0, 1]) or a batch ``Bx3xHxW``; numpy or
      torch (CPU or CUDA).
    - ``prompt``: None (automatic), a mask (``HxW`` or ``Bx1xHxW``) or prompt objects (JSON dicts
      such as ``{"type": "point", "x": 320, "y": 240}`` or :mod:`smat_deploy.prompts` objects).
    - ``state``: None (interactive where the prompt marks a pixel), 0/1, or one value per sample.
    - returns alpha in [0, 1] as the caller's kind: ``HxW`` for one photo, ``Bx1xHxW`` for a batch.

    Bad inputs raise :class:`~smat_deploy.SmatError` before the engine runs. Safe to call from
    several threads at once.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @classmethod
    def open(
        cls,
        engine: EngineSpec,
        device: str = "auto",
        providers: Sequence[str] | None = None,
        *,
        threads: int | None = None,
        seed: int = 0,
    ) -> Runtime:
        """Open ``engine``.

        ``device``: ``auto`` (CUDA when torch sees a GPU and the backend can use it, else CPU),
        ``cpu``, ``cuda`` or ``cuda:N``; a requested GPU that cannot be used is an error, never a
        silent CPU run. ``providers``: ONNX Runtime execution providers, in order (overrides
        ``device``). ``threads``: intra-op threads (ONNX Runtime session; process-wide for torch).
        ``seed``: the built-in default weights' seed for ``"torch"``.
        """
        backend = backend_for(engine)
        if isinstance(engine, str | os.PathLike) and engine != TORCH_ENGINE and not Path(engine).is_file():
            raise SmatError(f"engine not found: {engine}")
        if (reason := backend.unavailable_reason()) is not None:
            raise SmatError(reason)
        return cls(backend.open(engine, device=device, providers=providers, threads=threads, seed=seed))

    def __call__(self, image: object, prompt: object = None, state: object = None) -> Array:
        prepared = prepare_inputs(image, prompt, state)
        self.backend.limits.check(*prepared.shape, source=self.backend.source)
        alpha = self.backend.run(prepared.image, prepared.prompt, prepared.state)
        return restore_output(alpha, prepared)

    @property
    def info(self) -> RuntimeInfo:
        backend = self.backend
        return RuntimeInfo(
            backend=backend.name,
            engine=backend.source,
            precision=backend.precision,
            device=backend.device,
            providers=list(backend.providers),
            inputs=[spec.as_dict() for spec in backend.inputs],
            outputs=[spec.as_dict() for spec in backend.outputs],
            limits=backend.limits.as_dict(),
            details=dict(backend.details),
        )

    def __repr__(self) -> str:
        return f"Runtime({self.backend.name}: {self.backend.source}, {self.backend.precision}, {self.backend.device})"
