"""TensorRT backend: a serialized engine (``.plan``/``.engine``) run with the TensorRT 10/11 tensor API, in any
role: the whole model, or the interactive pair's encoder or decoder (``smat-deploy build --interactive``).

The engine stays a plain TensorRT file; its precision comes from the sidecar JSON, like every
other artifact. On opening, the engine's I/O tensors are checked against the role's contract and the
first optimisation profile is read, so a batch or image size outside it is refused before anything
runs. Each calling thread gets its own execution context and CUDA stream (contexts are not
thread-safe; the engine is). Inputs and outputs are torch CUDA tensors whose data pointers are
handed to ``set_tensor_address``; ``execute_async_v3`` runs on the thread's stream, which is then
synchronised. An encoder's outputs stay on the GPU, where its decoder reads them.

``tensorrt`` is imported lazily: without it, importing this module works and opening an engine
raises one clear line (see :func:`unavailable_reason`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smat_deploy.contract import DTYPES, ROLES, TensorSpec
from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import Array, Backend, Limits, check_contract, is_installed, sidecar_precision
from smat_deploy.runtime.devices import as_torch, torch_device
from smat_deploy.runtime.memory import MB, MemoryEstimate

INSTALL_HINT = "pip install tensorrt from NVIDIA's index: --extra-index-url https://pypi.nvidia.com"


def _torch() -> Any:
    """torch, imported when an engine is opened or run (TensorRT's buffers here are torch CUDA tensors)."""
    import torch

    return torch


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as err:
        raise SmatError(f"TensorRT is not installed ({INSTALL_HINT}): {err}") from None
    if not hasattr(trt, "Runtime"):  # PyPI's placeholder package, installed without NVIDIA's index
        raise SmatError(f"the tensorrt package here is a placeholder without the runtime ({INSTALL_HINT})")
    return trt


def unavailable_reason() -> str | None:
    """Why TensorRT engines cannot run here (no package, no torch, no GPU), or None when they can."""
    try:
        _import_tensorrt()
    except SmatError as err:
        return str(err)
    if not is_installed("torch"):
        return "TensorRT engines run on torch CUDA memory here, and torch is not installed (pip install torch)"
    torch = _torch()
    if not torch.cuda.is_available():
        return "TensorRT engines need an NVIDIA GPU, and torch sees no CUDA device here"
    return None


def _dtype_name(trt: Any, dtype: Any) -> str:
    """The contract's name of a TensorRT ``DataType`` member (through the one dtype table)."""
    for name, names in DTYPES.items():  # in the table's order: float32 first, so common types look up little
        member = names["tensorrt"]
        if member is not None and getattr(trt.DataType, str(member), None) == dtype:
            return name
    return str(dtype)


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(None if int(d) < 0 else int(d) for d in shape)


def engine_specs(trt: Any, engine: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The engine's I/O tensors as :class:`TensorSpec` (dynamic sizes as None)."""
    inputs, outputs = [], []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        spec = TensorSpec(name, _dtype_name(trt, engine.get_tensor_dtype(name)), _dims(engine.get_tensor_shape(name)))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
    return tuple(inputs), tuple(outputs)


def profile_limits(engine: Any, role: str = "whole") -> Limits:
    """Batch/height/width bounds of optimisation profile 0 (the one every context here uses), read off the
    role's photo-sized input (``image``; the decoder's ``prompt``)."""
    sized = ROLES[role].sized
    low, _, high = (tuple(int(d) for d in shape) for shape in engine.get_tensor_profile_shape(sized, 0))
    return Limits(batch=(low[0], high[0]), height=(low[2], high[2]), width=(low[3], high[3]))


class TensorRTBackend(Backend):
    name = "tensorrt"
    summary = "TensorRT: serialized .plan/.engine files, on an NVIDIA GPU"
    suffixes = (".plan", ".engine")
    devices = ("cuda",)
    install = INSTALL_HINT
    triton_platform = ("tensorrt_plan", "model.plan")

    engine: Any
    cuda_device: Any  # torch.device
    _local: threading.local

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return unavailable_reason()

    @classmethod
    def open(
        cls,
        engine: object,
        *,
        device: str = "auto",
        role: str = "whole",
    ) -> TensorRTBackend:
        path = Path(os.fspath(engine))  # type: ignore[arg-type]
        if not path.is_file():
            raise SmatError(f"TensorRT engine not found: {path}")
        trt = _import_tensorrt()
        torch = _torch()
        if not torch.cuda.is_available():
            raise SmatError("TensorRT engines need an NVIDIA GPU, and torch sees no CUDA device here")
        target = torch_device("cuda" if device == "auto" else device)
        if target.type != "cuda":
            raise SmatError(f"a TensorRT engine runs on a CUDA device, not {device}")
        precision, manifest = sidecar_precision(path)
        with torch.cuda.device(target):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            deserialized = runtime.deserialize_cuda_engine(path.read_bytes())
        if deserialized is None:
            raise SmatError(
                f"TensorRT {trt.__version__} cannot load {path}: not an engine, or built with another "
                "TensorRT version or for another GPU"
            )
        inputs, outputs = engine_specs(trt, deserialized)
        check_contract(inputs, outputs, str(path), role)
        if deserialized.num_optimization_profiles < 1:
            raise SmatError(f"{path} has no optimisation profile")
        backend = cls(
            source=str(path),
            precision=precision,
            device=str(target),
            providers=[f"tensorrt-{trt.__version__}"],
            inputs=inputs,
            outputs=outputs,
            limits=profile_limits(deserialized, role),
            details={
                "manifest": str(manifest) if manifest else None,
                "profiles": deserialized.num_optimization_profiles,
            },
            role=role,
        )
        backend.engine = deserialized
        backend.cuda_device = target
        backend._local = threading.local()
        backend._estimate_lock = threading.Lock()
        backend._runtime = runtime  # the engine must not outlive the runtime that deserialized it
        return backend

    def estimate_memory(self, batch: int, height: int, width: int) -> MemoryEstimate:
        """TensorRT's own figure: the activation memory its engine needs for these input shapes, plus the I/O tensors.

        A context created with ``ExecutionContextAllocationStrategy.USER_MANAGED`` allocates nothing; after
        its input shapes are set, ``update_device_memory_size_for_shapes`` returns what a call at those shapes
        needs (TensorRT 10 and 11). An engine without that API gets the conservative profile.
        """
        trt = _import_tensorrt()
        if self.role != "whole":  # the pair's halves: their own profile (the shapes of an embedding are derived)
            return super().estimate_memory(batch, height, width)
        io_bytes = batch * height * width * (3 + 1 + 1) * 4 + batch * 4
        with self._estimate_lock:
            context = getattr(self, "_sizing_context", None)
            if context is None:
                strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
                if strategy is None or not hasattr(trt.IExecutionContext, "update_device_memory_size_for_shapes"):
                    return super().estimate_memory(batch, height, width)
                context = self.engine.create_execution_context(strategy.USER_MANAGED)
                self._sizing_context = context
            for name, shape in (
                ("image", (batch, 3, height, width)),
                ("prompt", (batch, 1, height, width)),
                ("state", (batch, 1)),
            ):
                context.set_input_shape(name, shape)
            activations = int(context.update_device_memory_size_for_shapes())
        total = (activations + io_bytes) / MB
        return MemoryEstimate(total, 0.0, 0.0, 0.0, io_bytes / MB, "tensorrt (the engine's own figure)", "whole")

    def _context(self) -> tuple[Any, Any]:
        """This thread's execution context and ``torch.cuda.Stream``, created on first use."""
        torch = _torch()
        local = self._local
        if not hasattr(local, "context"):
            with torch.cuda.device(self.cuda_device):
                context = self.engine.create_execution_context()
                if context is None:
                    raise SmatError("TensorRT could not create an execution context (out of GPU memory?)")
                local.context, local.stream = context, torch.cuda.Stream(self.cuda_device)
        return local.context, local.stream

    def infer(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        torch = _torch()
        context, stream = self._context()
        caller_stream = torch.cuda.current_stream(self.cuda_device)
        stream.wait_stream(caller_stream)  # inputs the caller produced on its stream must be ready
        role = ROLES[self.role]
        with torch.cuda.device(self.cuda_device), torch.cuda.stream(stream):
            tensors = {name: _on_device(feed[name], self.cuda_device) for name in role.input_names}
            for name, tensor in tensors.items():
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise SmatError(f"TensorRT refused {name} of shape {list(tensor.shape)} (outside the profile?)")
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in role.output_names:
                shape = tuple(context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=torch.float32, device=self.cuda_device)
                context.set_tensor_address(name, outputs[name].data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise SmatError("TensorRT execution failed (see the TensorRT log above)")
        stream.synchronize()
        return outputs


def _on_device(array: Array, device: Any) -> Any:
    """A contiguous float32 CUDA tensor on ``device``: host data is uploaded, device data is used in place."""
    torch = _torch()
    return as_torch(array).to(device=device, dtype=torch.float32, non_blocking=True).contiguous()
