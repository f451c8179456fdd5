"""Every backend, by name, loaded on first use: adding a backend is one file plus one line in :data:`BACKENDS`.

The registry knows each backend only as ``module:Class``; a backend's module imports without its
optional package (torch, tensorrt, openvino), so listing backends or choosing one for a file never
fails and never loads a heavy package. :func:`backend_for` picks the backend that opens an engine:
the one named, or else the first in this order that accepts it (``.onnx`` -> ONNX Runtime).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import Backend

#: name -> "module:Class", in the order the documentation lists them and ``.onnx`` files are matched.
BACKENDS: dict[str, str] = {
    "torch": "smat_deploy.runtime.torch_backend:TorchBackend",
    "onnxruntime": "smat_deploy.runtime.onnxrt:OnnxRuntimeBackend",
    "openvino": "smat_deploy.runtime.openvino:OpenVinoBackend",
    "tensorrt": "smat_deploy.runtime.tensorrt:TensorRTBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The backend registered as ``name``; an unknown name is one clear error listing the known ones."""
    target = BACKENDS.get(name)
    if target is None:
        raise SmatError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def all_backends() -> list[type[Backend]]:
    return [backend_class(name) for name in BACKENDS]


def backend_for(engine: object, backend: str | None = None) -> type[Backend]:
    """The backend for ``engine``: ``backend`` when given (it must accept the engine), else the first that does."""
    if backend is not None:
        chosen = backend_class(backend)
        if not chosen.accepts(engine):
            kinds = ", ".join(chosen.suffixes) or "its own engines"
            raise SmatError(f"backend {chosen.name} cannot open {_describe(engine)}: it opens {kinds}")
        return chosen
    for candidate in all_backends():
        if candidate.accepts(engine):
            return candidate
    if not isinstance(engine, str | os.PathLike):
        raise SmatError(f"an engine is a path, 'torch' or an SMat module, got {type(engine).__name__}")
    known = ", ".join(f"{s} ({b.name})" for b in all_backends() for s in b.suffixes)
    raise SmatError(f"unknown engine type {Path(engine).name!r}: expected 'torch' or a file ending in {known}")


def _describe(engine: object) -> str:
    return Path(engine).name if isinstance(engine, str | os.PathLike) else type(engine).__name__


def describe_backends() -> list[dict]:
    """Each backend: name, file types, devices, options and whether it can run here (``smat-deploy backends``)."""
    rows = []
    for cls in all_backends():
        reason = cls.unavailable_reason()  # may import the backend's package: asked once
        rows.append(
            {
                "backend": cls.name,
                "summary": cls.summary,
                "file_types": list(cls.suffixes),
                "devices": list(cls.devices),
                "options": {name: option.help for name, option in cls.options.items()},
                "available": reason is None,
                "reason": reason,
                "triton_platform": cls.triton_platform[0] if cls.triton_platform else None,
            }
        )
    return rows
