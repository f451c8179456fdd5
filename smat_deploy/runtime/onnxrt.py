"""ONNX Runtime backend: any ``.onnx`` file that meets the SMat contract (float32, float16 or int8 inside).

Provider choice is explicit. ONNX Runtime silently falls back to the CPU when a requested provider
cannot load (the CUDA provider of onnxruntime-gpu without its CUDA libraries, say); here a requested
GPU provider that did not load is an error, and only ``device="auto"`` may end up on the CPU.

CUDA tensors are bound with IOBinding to their data pointers (inputs and the preallocated output),
so a torch CUDA image never makes a trip through host memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort

from smat_deploy._ort import CPU, CUDA, session_options
from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import (
    THREADS,
    Array,
    Backend,
    BackendOption,
    TensorSpec,
    check_contract,
    profile_for_onnx,
    sidecar_precision,
    static_limits,
)
from smat_deploy.runtime.devices import check_cuda, cuda_device_count, is_tensor, parse_device

_ORT_DEFAULT_LOG_SEVERITY = 2  # warnings, ONNX Runtime's own default
#: Calls predicted to need more than this give ONNX Runtime's arena back afterwards. Left to grow, the arena
#: keeps what a large call took and takes more on the next one (6.9 GB, then 11.9 GB at 1344x1344 here),
#: so no memory budget would hold across calls; small calls keep it, and its speed.
RELEASE_ABOVE_MB = 256.0
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _specs(args: Sequence[ort.NodeArg]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(a.name, _DTYPES.get(a.type, a.type), tuple(a.shape)) for a in args)


def _value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "undefined"
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, dims)


def check_onnx_file(path: str | os.PathLike[str]) -> None:
    """Check an ONNX file's declared I/O against the contract without building a session (cheap, no weights run)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends for non-ONNX files
        raise SmatError(f"cannot read ONNX model {path}: {type(err).__name__}") from None
    weights = {init.name for init in model.graph.initializer}
    inputs = tuple(_value_spec(v) for v in model.graph.input if v.name not in weights)
    check_contract(inputs, tuple(_value_spec(v) for v in model.graph.output), str(path))


@contextlib.contextmanager
def _quiet_provider_loading(active: bool) -> Iterator[None]:
    """Hide ONNX Runtime's multi-line log when a provider fails to load; the caller reports it in one line."""
    if not active:
        yield
        return
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_LOG_SEVERITY)


def resolve_providers(device: str, providers: Sequence[str] | None) -> tuple[list, list[str], bool]:
    """``(providers for the session, providers that must load, fall back allowed)`` for a device request."""
    available = ort.get_available_providers()
    if providers is not None:
        providers = list(providers)
        if not providers:
            raise SmatError("providers is empty: name at least one ONNX Runtime execution provider")
        if unknown := [p for p in providers if p not in available]:
            raise SmatError(f"ONNX Runtime here has no {', '.join(unknown)} (available: {', '.join(available)})")
        return providers, [p for p in providers if p != CPU], False
    target = parse_device(device)
    if target.kind == "auto":
        if cuda_device_count() > 0 and CUDA in available:
            return [CUDA, CPU], [], True
        return [CPU], [], False
    if target.kind == "cpu":
        return [CPU], [], False
    if CUDA not in available:
        raise SmatError(f"device {device} needs onnxruntime-gpu; this ONNX Runtime only has {', '.join(available)}")
    return [(CUDA, {"device_id": check_cuda(target, device)}), CPU], [CUDA], False


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    summary = "ONNX Runtime: any .onnx meeting the contract (float32, fp16, int8), CPU or CUDA"
    suffixes = (".onnx",)
    devices = ("cpu", "cuda")
    options: ClassVar[Mapping[str, BackendOption]] = {
        "threads": THREADS,
        "providers": BackendOption(list, "ONNX Runtime execution providers, in order (overrides the device)"),
    }
    install = "pip install onnxruntime-gpu"
    triton_platform = ("onnxruntime_onnx", "model.onnx")

    session: ort.InferenceSession
    cuda_index: int | None

    @classmethod
    def check_file(cls, path: Path) -> None:
        check_onnx_file(path)

    @classmethod
    def open(
        cls,
        engine: object,
        *,
        device: str = "auto",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> OnnxRuntimeBackend:
        path = Path(os.fspath(engine))  # type: ignore[arg-type]
        if not path.is_file():
            raise SmatError(f"ONNX model not found: {path}")
        precision, manifest = sidecar_precision(path)
        requested, required, fallback = resolve_providers(device, providers)
        options = session_options(precision, threads)
        try:
            with _quiet_provider_loading(bool(required) or fallback):
                session = ort.InferenceSession(str(path), options, providers=requested)
        except Exception as err:  # ORT raises its own exception types for unreadable or invalid models
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise SmatError(f"ONNX Runtime cannot load {path}: {first}") from None
        active = session.get_providers()
        if missing := [p for p in required if p not in active]:
            raise SmatError(
                f"{', '.join(missing)} was requested but did not load (active: {', '.join(active)}); "
                "check the CUDA/cuDNN libraries onnxruntime-gpu needs, or use device='cpu'"
            )
        inputs, outputs = _specs(session.get_inputs()), _specs(session.get_outputs())
        check_contract(inputs, outputs, str(path))
        cuda_index = None
        if CUDA in active:
            cuda_index = int(session.get_provider_options().get(CUDA, {}).get("device_id", 0))
        backend = cls(
            source=str(path),
            precision=precision,
            device="cpu" if cuda_index is None else f"cuda:{cuda_index}",
            providers=active,
            inputs=inputs,
            outputs=outputs,
            limits=static_limits(inputs),
            details={
                "manifest": str(manifest) if manifest else None,
                "threads": threads,
                "graph_optimization": str(options.graph_optimization_level).rsplit(".", 1)[-1],
            },
            memory_profile=profile_for_onnx(path, "onnxruntime"),
        )
        backend.session = session
        backend.cuda_index = cuda_index
        return backend

    def run(self, image: Array, prompt: Array, state: Array) -> Array:
        if self.cuda_index is not None and is_tensor(image) and image.is_cuda:
            return self._run_bound(image, prompt, state)
        feed = {
            "image": _host(image),
            "prompt": _host(prompt),
            "state": _host(state),
        }
        return self.session.run(["alpha"], feed, self._run_options(image.shape))[0]

    def _run_options(self, shape: Sequence[int]) -> ort.RunOptions | None:
        """Run options that give the arena back after a call predicted above :data:`RELEASE_ABOVE_MB`."""
        batch, _, height, width = (int(d) for d in shape)
        if self.estimate_memory(batch, height, width).total_mb <= RELEASE_ABOVE_MB:
            return None
        options = ort.RunOptions()
        arenas = "cpu:0" if self.cuda_index is None else f"cpu:0;gpu:{self.cuda_index}"
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
        return options

    def raw_call(self) -> Callable[[dict], object]:
        session = self.session
        return lambda feed: session.run(["alpha"], feed)

    def _run_bound(self, image: Any, prompt: Any, state: Any) -> Any:
        """CUDA tensors in, CUDA tensor out: IOBinding to torch's memory, no host copies."""
        import torch  # a CUDA tensor came in: torch is loaded already

        device = torch.device("cuda", self.cuda_index)
        tensors = {name: t.to(device) for name, t in (("image", image), ("prompt", prompt), ("state", state))}
        batch, _, height, width = image.shape
        alpha = torch.empty((batch, 1, height, width), dtype=torch.float32, device=device)
        binding = self.session.io_binding()
        for name, tensor in tensors.items():
            binding.bind_input(name, "cuda", device.index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        binding.bind_output("alpha", "cuda", device.index, np.float32, tuple(alpha.shape), alpha.data_ptr())
        # ONNX Runtime runs on its own stream: the inputs torch produced must be complete first.
        torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding, self._run_options(image.shape))
        binding.synchronize_outputs()
        return alpha


def _host(array: Array) -> np.ndarray:
    """numpy for ``session.run``: free for numpy and CPU tensors, one copy for CUDA tensors on a CPU session."""
    return array.detach().cpu().numpy() if is_tensor(array) else array
