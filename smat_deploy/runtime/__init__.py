"""Run any SMat engine (PyTorch reference, ONNX Runtime, OpenVINO, TensorRT) behind one call: :class:`Runtime`.

Importing this package loads neither PyTorch nor any backend's package; a backend's package is
imported when it opens an engine.
"""

from smat_deploy.runtime.base import Backend, BackendOption, Limits, check_contract
from smat_deploy.runtime.predictor import PhotoEmbedding, Predictor
from smat_deploy.runtime.registry import BACKENDS, all_backends, backend_class, backend_for, describe_backends
from smat_deploy.runtime.wrapper import Runtime, RuntimeInfo

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOption",
    "Limits",
    "PhotoEmbedding",
    "Predictor",
    "Runtime",
    "RuntimeInfo",
    "all_backends",
    "backend_class",
    "backend_for",
    "check_contract",
    "describe_backends",
]
