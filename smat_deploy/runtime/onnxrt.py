"""ONNX Runtime backend: any ``.onnx`` file of the SMat contract (float32, float16 or int8 inside), in any role:
the whole model, or the interactive pair's encoder or decoder.

Provider choice is explicit. ONNX Runtime silently falls back to the CPU when a requested provider
cannot load (the CUDA provider of onnxruntime-gpu without its CUDA libraries, say); here a requested
GPU provider that did not load is an error, and only ``device="auto"`` may end up on the CPU.

On the GPU, inputs and outputs are bound with IOBinding: torch CUDA tensors to their data pointers (a CUDA
photo never makes a trip through host memory), an encoder's embedding kept on the device as ``OrtValue``s
that the decoder binds as they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime as ort

from smat_deploy._ort import CPU, CUDA, session, session_options
from smat_deploy.contract import ROLES, dtype_name
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
from smat_deploy.runtime.devices import check_cuda, cuda_device_count, is_tensor, parse_device, to_host

#: Calls predicted to need more than this give ONNX Runtime's arena back afterwards. Left to grow, the arena
#: keeps what a large call took and takes more on the next one (6.9 GB, then 11.9 GB at 1344x1344 here),
#: so no memory budget would hold across calls; small calls keep it, and its speed.
RELEASE_ABOVE_MB = 256.0


def _specs(args: Sequence[ort.NodeArg]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(a.name, dtype_name("onnxruntime", a.type), tuple(a.shape)) for a in args)


def _value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = dtype_name("onnx", tensor.elem_type) if tensor.elem_type else "undefined"
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, dims)


def check_onnx_file(path: str | os.PathLike[str], role: str = "whole") -> None:
    """Check an ONNX file's declared I/O against ``role``'s without building a session (cheap, no weights run)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends for non-ONNX files
        raise SmatError(f"cannot read ONNX model {path}: {type(err).__name__}") from None
    weights = {init.name for init in model.graph.initializer}
    inputs = tuple(_value_spec(v) for v in model.graph.input if v.name not in weights)
    check_contract(inputs, tuple(_value_spec(v) for v in model.graph.output), str(path), role)


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
        role: str = "whole",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> OnnxRuntimeBackend:
        path = Path(os.fspath(engine))  # type: ignore[arg-type]
        if not path.is_file():
            raise SmatError(f"ONNX model not found: {path}")
        precision, manifest = sidecar_precision(path)
        requested, required, fallback = resolve_providers(device, providers)
        loaded = session(
            path, precision=precision, threads=threads, providers=requested, quiet=bool(required) or fallback
        )
        active = loaded.get_providers()
        if missing := [p for p in required if p not in active]:
            raise SmatError(
                f"{', '.join(missing)} was requested but did not load (active: {', '.join(active)}); "
                "check the CUDA/cuDNN libraries onnxruntime-gpu needs, or use device='cpu'"
            )
        inputs, outputs = _specs(loaded.get_inputs()), _specs(loaded.get_outputs())
        check_contract(inputs, outputs, str(path), role)
        cuda_index = None
        if CUDA in active:
            cuda_index = int(loaded.get_provider_options().get(CUDA, {}).get("device_id", 0))
        backend = cls(
            source=str(path),
            precision=precision,
            device="cpu" if cuda_index is None else f"cuda:{cuda_index}",
            providers=active,
            inputs=inputs,
            outputs=outputs,
            limits=static_limits(inputs, role),
            details={
                "manifest": str(manifest) if manifest else None,
                "threads": threads,
                "graph_optimization": str(session_options(precision).graph_optimization_level).rsplit(".", 1)[-1],
            },
            memory_profile=profile_for_onnx(path, "onnxruntime", role),
            role=role,
        )
        backend.session = loaded
        backend.cuda_index = cuda_index
        return backend

    @property
    def _output_names(self) -> list[str]:
        return list(ROLES[self.role].output_names)

    def infer(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        names = self._output_names
        if self.cuda_index is not None and (self.role == "encoder" or any(_on_gpu(v) for v in feed.values())):
            return self._infer_bound(feed)
        values = self.session.run(names, {name: to_host(value) for name, value in feed.items()}, self._options(feed))
        return dict(zip(names, values, strict=True))

    def raw_call(self) -> Callable[[dict], object]:
        loaded, names = self.session, self._output_names
        return lambda feed: loaded.run(names, feed)

    def _options(self, feed: Mapping[str, Array]) -> ort.RunOptions | None:
        """Run options that give the arena back after a call predicted above :data:`RELEASE_ABOVE_MB`."""
        batch, _, height, width = (int(d) for d in feed[ROLES[self.role].sized].shape)
        if self.estimate_memory(batch, height, width).total_mb <= RELEASE_ABOVE_MB:
            return None
        options = ort.RunOptions()
        arenas = "cpu:0" if self.cuda_index is None else f"cpu:0;gpu:{self.cuda_index}"
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
        return options

    def _infer_bound(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        """On the GPU: device data bound where it is; an encoder's outputs kept on the device as ``OrtValue``s,
        other outputs in torch CUDA tensors when the inputs were, else copied to the host."""
        binding = self.session.io_binding()
        tensors = [value for value in feed.values() if _on_gpu(value) and is_tensor(value)]
        if tensors:
            import torch  # a CUDA tensor came in: torch is loaded already

            device = torch.device("cuda", self.cuda_index)
            torch.cuda.current_stream(device).synchronize()  # ONNX Runtime runs on its own stream
        for name, value in feed.items():
            if type(value).__name__ == "OrtValue":
                binding.bind_ortvalue_input(name, value)
            elif is_tensor(value) and value.is_cuda:
                value = value.to(device=device).contiguous()
                binding.bind_input(name, "cuda", self.cuda_index, np.float32, tuple(value.shape), value.data_ptr())
            else:
                binding.bind_cpu_input(name, to_host(value))
        names = self._output_names
        if self.role == "encoder":
            for name in names:
                binding.bind_output(name, "cuda", self.cuda_index)
            self.session.run_with_iobinding(binding, self._options(feed))
            return dict(zip(names, binding.get_outputs(), strict=True))
        if tensors:
            batch, _, height, width = feed[ROLES[self.role].sized].shape
            alpha = torch.empty((int(batch), 1, int(height), int(width)), dtype=torch.float32, device=device)
            binding.bind_output("alpha", "cuda", self.cuda_index, np.float32, tuple(alpha.shape), alpha.data_ptr())
            self.session.run_with_iobinding(binding, self._options(feed))
            binding.synchronize_outputs()
            return {"alpha": alpha}
        binding.bind_output("alpha", "cpu")
        self.session.run_with_iobinding(binding, self._options(feed))
        return {"alpha": binding.copy_outputs_to_cpu()[0]}


def _on_gpu(value: object) -> bool:
    """Device data: a CUDA torch tensor, or an ``OrtValue`` an encoder left on the GPU."""
    if type(value).__name__ == "OrtValue":
        return value.device_name().lower() != "cpu"  # type: ignore[attr-defined]
    return is_tensor(value) and bool(value.is_cuda)  # type: ignore[attr-defined]
