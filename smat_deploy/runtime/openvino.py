"""OpenVINO backend: an exported ``.onnx`` run by Intel's OpenVINO on the CPU.

OpenVINO reads the ONNX file directly (no conversion step, no extra artifact), with its dynamic
batch and image sizes. Inference runs in float32 by default (``inference_precision=f32``): on CPUs
with AMX or AVX-512 BF16, OpenVINO's own default would be bfloat16, which is a different
precision from the file's. Each calling thread gets its own infer request (requests are not
thread-safe; the compiled model is). ``openvino`` is imported when an engine is opened.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from smat_deploy.contract import TensorSpec
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
from smat_deploy.runtime.devices import is_tensor
from smat_deploy.runtime.memory import PROFILES
from smat_deploy.runtime.onnxrt import check_onnx_file

_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i32": "int32",
    "i64": "int64",
    "boolean": "bool",
}
_PRECISION_HINTS = ("f32", "bf16", "f16")
_PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")


def _spec(port: Any) -> TensorSpec:
    shape = tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())
    dtype = port.get_element_type().get_type_name()
    return TensorSpec(port.get_any_name(), _DTYPES.get(dtype, dtype), shape)


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
        threads: int | None = None,
        inference_precision: str | None = None,
        hint: str | None = None,
    ) -> OpenVinoBackend:
        import openvino as ov

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
        check_contract(inputs, outputs, str(path))
        backend = cls(
            source=str(path),
            precision=precision,
            device="cpu",
            providers=[f"openvino-{ov.get_version().split('-')[0]}-CPU"],
            inputs=inputs,
            outputs=outputs,
            limits=static_limits(inputs),
            details={
                "manifest": str(manifest) if manifest else None,
                "threads": threads,
                "inference_precision": inference_precision,
                "hint": hint,
            },
            memory_profile=PROFILES["openvino"],
        )
        backend.compiled = compiled
        backend._local = threading.local()
        return backend

    def _request(self) -> Any:
        local = self._local
        if not hasattr(local, "request"):
            local.request = self.compiled.create_infer_request()
        return local.request

    def run(self, image: Array, prompt: Array, state: Array) -> np.ndarray:
        feed = {name: _host(array) for name, array in (("image", image), ("prompt", prompt), ("state", state))}
        return self._infer(feed)

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        request = self._request()
        request.infer(feed)
        return np.array(request.get_tensor("alpha").data, copy=True)  # the request reuses its output buffer

    def raw_call(self) -> Callable[[dict], object]:
        return self._infer


def _host(array: Array) -> np.ndarray:
    return array.detach().cpu().numpy() if is_tensor(array) else np.ascontiguousarray(array)
