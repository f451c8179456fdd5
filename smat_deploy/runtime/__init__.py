"""Run any SMat engine (PyTorch reference, ONNX Runtime, TensorRT) behind one call: :class:`Runtime`."""

from smat_deploy.runtime.base import Backend, Limits, TensorSpec, check_contract
from smat_deploy.runtime.wrapper import BACKENDS, Runtime, RuntimeInfo, backend_for

__all__ = ["BACKENDS", "Backend", "Limits", "Runtime", "RuntimeInfo", "TensorSpec", "backend_for", "check_contract"]
