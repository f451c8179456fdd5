"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``) parsed and checked without importing PyTorch.

Whether a CUDA GPU is present is asked of torch when a caller has already imported it (it is then
free), and otherwise of the NVIDIA driver itself (``libcuda``), so the ONNX Runtime and OpenVINO
paths never load torch.
"""

from __future__ import annotations

import ctypes
import functools
import re
import sys
from dataclasses import dataclass
from typing import Any

from smat_deploy.errors import SmatError

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


@dataclass(frozen=True)
class Device:
    """A parsed device request: ``kind`` is ``auto``, ``cpu`` or ``cuda``; ``index`` only for ``cuda:N``."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: str) -> Device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, with a one-line error for anything else."""
    if text == "auto":
        return Device("auto")
    match = _DEVICE.fullmatch(str(text).strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise SmatError(f"unknown device {text!r}: expected auto, cpu, cuda or cuda:N")
    index = match.group(2)
    return Device(match.group(1), None if index is None else int(index))


@functools.cache
def _driver_device_count() -> int:
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def cuda_device_count() -> int:
    """How many CUDA GPUs this process can use (0 without a GPU or driver)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    return _driver_device_count()


def check_cuda(device: Device, text: str) -> int:
    """The GPU index a ``cuda``/``cuda:N`` request names, checked against the GPUs present."""
    count = cuda_device_count()
    if count == 0:
        raise SmatError(f"device {text} requested, but no CUDA GPU is visible here")
    index = device.index or 0
    if index >= count:
        raise SmatError(f"device {text} requested, but only {count} CUDA GPU(s) are visible")
    return index


class _NvmlMemory(ctypes.Structure):
    _fields_ = (("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong))


def cuda_free_memory_mb(index: int = 0) -> float:
    """Free memory of CUDA GPU ``index`` now, in MB: torch's ``mem_get_info`` when torch is loaded, else NVML.

    NVML (``libnvidia-ml``, shipped with the driver) answers without creating a CUDA context, so the ONNX
    Runtime and TensorRT paths do not pay for one; where neither can answer, a size policy needs an explicit
    ``--max-memory-mb``.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.mem_get_info(index)[0] / 1e6
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        nvml = None
    if nvml is not None and nvml.nvmlInit_v2() == 0:
        try:
            handle, memory = ctypes.c_void_p(), _NvmlMemory()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) == 0 and (
                nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == 0
            ):
                return memory.free / 1e6
        finally:
            nvml.nvmlShutdown()
    raise SmatError(
        f"cannot read the free memory of cuda:{index} (neither torch nor NVML answers): pass --max-memory-mb"
    )


def torch_device(text: str) -> Any:
    """A device request as a ``torch.device`` (CUDA checked to be usable); for the backends that run on torch."""
    import torch

    device = parse_device(text)
    if device.kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.kind == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", check_cuda(device, text))  # torch is loaded: the count is torch's


def as_torch(array: Any) -> Any:
    """A torch view of a numpy array (a copy only when the array is read-only), or the tensor itself."""
    import torch

    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def to_host(array: Any) -> Any:
    """Any array a backend hands back or takes, as a contiguous numpy array on the host: numpy as it is (a copy
    only when not contiguous), a torch tensor from its device, an ONNX Runtime ``OrtValue`` from its device."""
    import numpy as np

    if is_tensor(array):
        return array.detach().cpu().numpy()
    if type(array).__name__ == "OrtValue":
        return array.numpy()
    return np.ascontiguousarray(array)


def is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (a tensor means torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)
