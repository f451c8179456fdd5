"""smat-deploy: SMat (automatic + interactive ViT matting) from PyTorch to verified, fast inference.

The package is layered; each layer imports only from the layers before it:

``contract`` (the I/O contract, sizes, precisions and gates) -> ``errors``, ``images``, ``prompts``
-> ``data`` -> ``model`` (the PyTorch reference) -> ``export`` (PyTorch -> ONNX) -> ``engines``
(FP16, INT8, TensorRT artifacts) -> ``runtime`` (one call over every backend) -> ``evaluation``
(metrics, bench, parity), ``serve``, ``train`` -> ``apps`` (demo, folder matting) -> ``cli``.

Importing ``smat_deploy`` loads nothing heavy: ``Runtime`` needs numpy and a backend's package
(ONNX Runtime, OpenVINO, TensorRT), never PyTorch; the model names load PyTorch when first used.
"""

from __future__ import annotations

import importlib

from smat_deploy.errors import SmatError

__version__ = "0.1.0"

__all__ = [
    "PhotoEmbedding",
    "Predictor",
    "Runtime",
    "SMat",
    "SMatConfig",
    "SmatError",
    "__version__",
    "load_model",
    "save_checkpoint",
]

_LAZY = {
    "Runtime": "smat_deploy.runtime",
    "Predictor": "smat_deploy.runtime",
    "PhotoEmbedding": "smat_deploy.runtime",
    "SMat": "smat_deploy.model",
    "SMatConfig": "smat_deploy.model",
    "load_model": "smat_deploy.model",
    "save_checkpoint": "smat_deploy.model",
}


def __getattr__(name: str) -> object:
    """``smat_deploy.Runtime`` without PyTorch, ``smat_deploy.SMat`` without ONNX Runtime: each loads on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smat_deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
