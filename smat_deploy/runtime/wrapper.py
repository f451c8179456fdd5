"""``Runtime``: one call for every engine, whatever it is, with the caller's arrays in and out.

``Runtime.open`` picks the backend (the one named, or the first in the registry that accepts the
engine: ``.onnx`` -> ONNX Runtime, ``.plan``/``.engine`` -> TensorRT, ``"torch"``, a ``.pth``/``.pt``
checkpoint or an SMat module -> the PyTorch reference), checks the engine against the SMat I/O
contract, and ``runtime(image, prompt, state)`` validates the inputs against that contract and the
engine's size limits before running it. Nothing here imports PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import Array, Backend
from smat_deploy.runtime.devices import parse_device
from smat_deploy.runtime.inputs import prepare_inputs, restore_output
from smat_deploy.runtime.registry import backend_for

#: A path, ``"torch"`` (the reference with its built-in weights) or an SMat module.
EngineSpec = Any


def check_options(backend: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` parsed by the backend's declarations; None values count as not given."""
    given = {name: value for name, value in options.items() if value is not None}
    parsed = {}
    for name, value in given.items():
        declared = backend.options.get(name)
        if declared is None:
            takes = ", ".join(backend.options) or "no options"
            raise SmatError(f"backend {backend.name} does not take option {name!r} (it takes: {takes})")
        parsed[name] = declared.parse(backend.name, name, value)
    return parsed


def shared_options(backend: type[Backend], **settings: Any) -> dict[str, Any]:
    """Settings a tool applies to every engine it opens (``threads``, ``seed``): those this backend declares."""
    return {name: value for name, value in settings.items() if name in backend.options and value is not None}


def engine_options(backend: type[Backend], backend_options: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """What a tool opens an engine with: its ``settings`` (``threads``, ``seed``) where ``backend`` declares
    them, then ``backend_options``, which the backend must take and which win over a setting."""
    return {**shared_options(backend, **settings), **check_options(backend, backend_options)}


def check_device(backend: type[Backend], device: str) -> None:
    kind = parse_device(device).kind
    if kind != "auto" and kind not in backend.devices:
        raise SmatError(f"backend {backend.name} runs on {' or '.join(backend.devices)}, not {device}")


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
        cls, engine: EngineSpec, backend: str | None = None, device: str = "auto", **backend_options: Any
    ) -> Runtime:
        """Open ``engine`` with ``backend`` (default: the first registered backend that accepts it).

        ``device``: ``auto`` (a GPU when one is usable and the backend can use it, else the CPU),
        ``cpu``, ``cuda`` or ``cuda:N``; a requested GPU that cannot be used is an error, never a
        silent CPU run. ``backend_options``: what the backend declares (``Backend.options``; for
        example ``threads`` for torch, ONNX Runtime and OpenVINO, ``providers`` for ONNX Runtime,
        ``seed`` for the torch engine's built-in weights); another option is an error.
        """
        chosen = backend_for(engine, backend)
        options = check_options(chosen, backend_options)
        check_device(chosen, device)
        if (
            isinstance(engine, str | os.PathLike)
            and Path(engine).suffix.lower() in chosen.suffixes
            and not Path(engine).is_file()
        ):
            raise SmatError(f"engine not found: {engine}")
        if (reason := chosen.unavailable_reason()) is not None:
            raise SmatError(reason)
        return cls(chosen.open(engine, device=device, **options))

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
