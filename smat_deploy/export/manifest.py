"""Writing the sidecar JSON next to every exported model: the contract a caller in any language needs.

Engines and ONNX files stay plain (nothing prepended); everything else lives in the manifest. Its I/O
section and file naming come from :mod:`smat_deploy.contract`, which also reads it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from smat_deploy._files import atomic_output, sha256_of
from smat_deploy.contract import ROLES
from smat_deploy.model import SMat, weights_digest

MANIFEST_FORMAT = "smat-deploy/onnx-manifest/1"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    from smat_deploy import __version__

    return {
        "smat_deploy": __version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"),
    }


def build_manifest(
    model_path: Path,
    model: SMat,
    *,
    opset: int,
    checkpoint: str | os.PathLike[str] | None,
    weights: str,
    precision: str = "float32",
    export_seconds: float | None = None,
    graph_checks: list[dict] | None = None,
    tensorrt_support: dict | None = None,
    parity: dict | None = None,
    extra: dict | None = None,
    role: str = "whole",
) -> dict:
    """The sidecar of ``model_path``, the graph of ``role`` (``whole``, or a half of the interactive pair)."""
    contract = ROLES[role]
    return {
        "format": MANIFEST_FORMAT,
        "model": model_path.name,
        "role": role,
        "sha256": sha256_of(model_path),
        "size_bytes": model_path.stat().st_size,
        "precision": precision,
        "opset": opset,
        "inputs": list(contract.inputs),
        "outputs": list(contract.outputs),
        "dimensions": contract.dimensions,
        "source": {
            "checkpoint": str(checkpoint) if checkpoint else None,
            "checkpoint_sha256": sha256_of(checkpoint) if checkpoint else None,
            "weights_sha256": weights_digest(model),
            "weights": weights,
        },
        "model_config": dataclasses.asdict(model.config),
        "versions": versions(),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "export_seconds": None if export_seconds is None else round(export_seconds, 2),
        "graph_checks": graph_checks or [],
        "tensorrt_support": tensorrt_support,
        "parity": parity,
        **(extra or {}),
    }


def write_manifest(path: str | os.PathLike[str], manifest: dict) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(path)
