"""OpenVINO backend: an exported ``.onnx`` run by Intel's OpenVINO on the CPU, in any role: the whole model, or
the interactive pair's encoder or decoder.

OpenVINO reads the ONNX file directly (no conversion step, no extra artifact), with its dynamic
batch and image sizes. It compiles for the device asked: ``auto`` and ``cpu`` are OpenVINO's CPU plugin;
a CUDA device is refused in one line (OpenVINO's GPU plugin drives Intel GPUs, not NVIDIA ones).
Inference runs in float32 by default (``inference_precision=f32``): on CPUs with AMX or AVX-512 BF16,
OpenVINO's own default would be bfloat16, which is a different precision from the file's. Each calling
thread gets its own infer request (requests are not thread-safe; the compiled model is). ``openvino`` is
imported when an engine is opened.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from smat_deploy.contract import ROLES, TensorSpec, dtype_name
from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import (
    THREADS,
    Array,
    Backend,
    BackendOption,
    check_contract,
    is_installed,
    sidecar_precision,
    static_limits,
)
from smat_deploy.runtime.devices import parse_device, to_host
from smat_deploy.runtime.memory import PAIR_PROFILES, PROFILES
from smat_deploy.runtime.onnxrt import check_onnx_file

_PRECISION_HINTS = ("f32", "bf16", "f16")
_PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")


def _spec(port: Any) -> TensorSpec:
    shape = tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), dtype_name("openvino", port.get_element_type().get_type_name()), shape)


class OpenVinoBackend(Backend):
    name = "openvino"
    summary = "OpenVINO: an .onnx meeting the contract, on the CPU (what Intel CPUs with AMX/VNNI run best)"
    suffixes = (".onnx",)
    devices = ("cpu",)
    options: ClassVar[Mapping[str, BackendOption]] = {
        "threads": THREADS,
        "inference_precision": BackendOption(str, f"OpenVINO's inference precision: {', '.join(_PRECISION_HINTS)}"),
        "hint": BackendOption(str, f"OpenVINO's performance hint: {', '.join(_PERFORMANCE_HINTS)} (default LATENCY)"),
    }
    install = "pip install 'smat-deploy[openvino]'"

    compiled: Any
    _local: threading.local

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if not is_installed("openvino"):
            return f"OpenVINO is not installed ({cls.install})"
        return None

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
        threads: int | None = None,
        inference_precision: str | None = None,
        hint: str | None = None,
    ) -> OpenVinoBackend:
        import openvino as ov

        if parse_device(device).kind not in ("auto", "cpu"):
            raise SmatError(
                f"OpenVINO runs here on the CPU, not {device}: its GPU plugin drives Intel GPUs; use device='cpu'"
            )
        path = Path(os.fspath(engine))  # type: ignore[arg-type]
        if not path.is_file():
            raise SmatError(f"ONNX model not found: {path}")
        inference_precision = (inference_precision or "f32").lower()
        if inference_precision not in _PRECISION_HINTS:
            raise SmatError(
                f"inference_precision {inference_precision!r}: expected one of {', '.join(_PRECISION_HINTS)}"
            )
        hint = (hint or "LATENCY").upper()
        if hint not in _PERFORMANCE_HINTS:
            raise SmatError(f"hint {hint!r}: expected one of {', '.join(_PERFORMANCE_HINTS)}")
        precision, manifest = sidecar_precision(path)
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own for unreadable models
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise SmatError(f"OpenVINO cannot load {path}: {first}") from None
        # The file's own I/O: the compiled model's ports also carry names of tensors fused into them
        # (a no-op Cast's output, an Identity's input), and get_any_name() may pick one of those.
        inputs = tuple(_spec(port) for port in model.inputs)
        outputs = tuple(_spec(port) for port in model.outputs)
        check_contract(inputs, outputs, str(path), role)
        backend = cls(
            source=str(path),
            precision=precision,
            device="cpu",
            providers=[f"openvino-{ov.get_version().split('-')[0]}-CPU"],
            inputs=inputs,
            outputs=outputs,
            limits=static_limits(inputs, role),
            details={
                "manifest": str(manifest) if manifest else None,
                "threads": threads,
                "inference_precision": inference_precision,
                "hint": hint,
            },
            memory_profile=PROFILES["openvino"] if role == "whole" else PAIR_PROFILES["openvino"],
            role=role,
            compute_precision=None if inference_precision == "f32" else inference_precision,
        )
        backend.compiled = compiled
        backend._local = threading.local()
        return backend

    def _request(self) -> Any:
        local = self._local
        if not hasattr(local, "request"):
            local.request = self.compiled.create_infer_request()
        return local.request

    def infer(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        return self._infer({name: to_host(array) for name, array in feed.items()})

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request()
        request.infer(dict(feed))
        # The request reuses its output buffers: each output is copied out.
        return {name: np.array(request.get_tensor(name).data, copy=True) for name in ROLES[self.role].output_names}

    def raw_call(self) -> Callable[[dict], object]:
        return lambda feed: self._infer(feed)["alpha"]
