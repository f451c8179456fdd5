"""The C++ library's C ABI (``cpp/include/smat/smat.h``) from Python through ctypes.

Used by ``smat-deploy cpp-bench`` (the C++ library and the Python ``Runtime`` timed side by side in one
process) and by the tests of ``cpp/``. :func:`load_library` finds ``libsmat.so``: the path given, else
``$SMAT_CPP_LIB``, else ``cpp/build/libsmat.so`` of this checkout (``make cpp`` builds it).
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np

from smat_deploy.errors import SmatError

SMAT_OK = 0
#: Where ``make cpp`` puts the library in a checkout.
DEFAULT_LIBRARY = Path(__file__).resolve().parent.parent / "cpp" / "build" / "libsmat.so"


class SmatImage(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_uint8)),
        ("width", ctypes.c_int32),
        ("height", ctypes.c_int32),
        ("stride", ctypes.c_size_t),
        ("format", ctypes.c_int),
    ]


class SmatOptions(ctypes.Structure):
    _fields_ = [
        ("backend", ctypes.c_char_p),
        ("threads", ctypes.c_int32),
        ("inference_precision", ctypes.c_char_p),
        ("precision", ctypes.c_char_p),
        ("max_memory_mb", ctypes.c_double),
        ("size_policy", ctypes.c_int32),
        ("scale_to", ctypes.c_int32),
        ("max_side", ctypes.c_int32),
        ("upsampling", ctypes.c_char_p),
    ]


class CError(SmatError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"status {status}: {message}")
        self.status, self.message = status, message


def load_library(path: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """``libsmat.so`` loaded, with the C ABI's argument types declared."""
    path = Path(path or os.environ.get("SMAT_CPP_LIB") or DEFAULT_LIBRARY)
    if not path.is_file():
        raise SmatError(f"the C++ library is not built: no {path} (run make cpp, or give --library)")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise SmatError(f"cannot load {path}: {err}") from None
    u8p, f32p, i32p = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)
    vp, cp, i32, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_size_t
    for name, restype, argtypes in (
        ("smat_version", cp, []),
        ("smat_last_error", cp, []),
        ("smat_engine_last_error", cp, [vp]),
        ("smat_predictor_last_error", cp, [vp]),
        ("smat_rasterize", ctypes.c_int, [cp, cp, i32, i32, u8p, size]),
        ("smat_upsample_alpha", ctypes.c_int, [cp, f32p, i32, i32, f32p, f32p, i32, i32, f32p, size]),
        ("smat_estimate_memory_mb", ctypes.c_int, [cp, i32, i32, i32, ctypes.POINTER(ctypes.c_double)]),
        ("smat_read_image", ctypes.c_int, [cp, i32p, i32p, u8p, size]),
        ("smat_engine_open", ctypes.c_int, [cp, vp, ctypes.POINTER(vp)]),
        ("smat_engine_matte", ctypes.c_int, [vp, vp, cp, cp, i32, f32p, size]),
        ("smat_engine_close", None, [vp]),
        ("smat_predictor_open", ctypes.c_int, [cp, vp, ctypes.POINTER(vp)]),
        ("smat_predictor_embed", ctypes.c_int, [vp, vp, ctypes.POINTER(vp)]),
        ("smat_predictor_predict", ctypes.c_int, [vp, vp, cp, cp, i32, f32p, size]),
        ("smat_predictor_close", None, [vp]),
        ("smat_embedding_free", None, [vp]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _prompts(prompts: list | None) -> bytes | None:
    return None if prompts is None else json.dumps(prompts).encode()


def rasterize(lib: ctypes.CDLL, prompts: list, height: int, width: int, base_dir: str | None = None) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    status = lib.smat_rasterize(
        _prompts(prompts),
        base_dir.encode() if base_dir else None,
        width,
        height,
        mask.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
        mask.size,
    )
    if status != SMAT_OK:
        raise CError(status, lib.smat_last_error().decode())
    return mask


def estimate_memory_mb(lib: ctypes.CDLL, role: str, batch: int, height: int, width: int) -> float:
    """The C++ library's memory model: the predicted peak of one OpenVINO call, in MB."""
    value = ctypes.c_double()
    status = lib.smat_estimate_memory_mb(role.encode(), batch, height, width, ctypes.byref(value))
    if status != SMAT_OK:
        raise CError(status, lib.smat_last_error().decode())
    return value.value


def read_image(lib: ctypes.CDLL, path: Path) -> np.ndarray:
    width, height = ctypes.c_int32(), ctypes.c_int32()
    status = lib.smat_read_image(str(path).encode(), ctypes.byref(width), ctypes.byref(height), None, 0)
    if status != SMAT_OK:
        raise CError(status, lib.smat_last_error().decode())
    rgb = np.zeros((height.value, width.value, 3), np.uint8)
    status = lib.smat_read_image(
        str(path).encode(),
        ctypes.byref(width),
        ctypes.byref(height),
        rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
        rgb.size,
    )
    if status != SMAT_OK:
        raise CError(status, lib.smat_last_error().decode())
    return rgb


def image_struct(pixels: np.ndarray) -> SmatImage:
    """An HxWx3 uint8 RGB array as an smat_image (borrowed: keep the array alive)."""
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    return SmatImage(
        pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), pixels.shape[1], pixels.shape[0], pixels.strides[0], 0
    )


def _alpha_call(
    call, last_error, handle, source, shape: tuple[int, int], prompts: list | None, state: int
) -> np.ndarray:
    """``smat_engine_matte`` or ``smat_predictor_predict`` on ``source`` (an image or an embedding) into a new
    ``shape`` alpha; a failure raises :class:`CError` with the handle's message."""
    alpha = np.zeros(shape, np.float32)
    status = call(
        handle, source, _prompts(prompts), None, state, alpha.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), alpha.size
    )
    if status != SMAT_OK:
        raise CError(status, last_error(handle).decode())
    return alpha


def upsample_alpha(
    lib: ctypes.CDLL, method: str, alpha: np.ndarray, small: np.ndarray | None, full: np.ndarray | None, size: tuple
) -> np.ndarray:
    """``smat_upsample_alpha``: an ``h x w`` alpha at ``size`` (height, width); ``small``/``full`` are the photo
    (``HxWx3`` float in [0, 1]) at both sizes, for ``guided``."""
    f32p = ctypes.POINTER(ctypes.c_float)

    def pointer(array: np.ndarray | None):
        return None if array is None else array.ctypes.data_as(f32p)

    alpha = np.ascontiguousarray(alpha, np.float32)
    small = None if small is None else np.ascontiguousarray(small, np.float32)
    full = None if full is None else np.ascontiguousarray(full, np.float32)
    out = np.zeros(size, np.float32)
    status = lib.smat_upsample_alpha(
        method.encode(),
        pointer(alpha),
        alpha.shape[1],
        alpha.shape[0],
        pointer(small),
        pointer(full),
        size[1],
        size[0],
        pointer(out),
        out.size,
    )
    if status != SMAT_OK:
        raise CError(status, lib.smat_last_error().decode())
    return out


class Engine:
    def __init__(
        self,
        lib: ctypes.CDLL,
        path: Path,
        max_memory_mb: float = 0.0,
        *,
        size_policy: bool = False,
        scale_to: int = 0,
        max_side: int = 0,
        upsampling: str | None = None,
    ) -> None:
        self.lib, self.handle = lib, ctypes.c_void_p()
        options = SmatOptions(
            None, 0, None, None, max_memory_mb, int(size_policy), scale_to, max_side, upsampling and upsampling.encode()
        )
        status = lib.smat_engine_open(str(path).encode(), ctypes.byref(options), ctypes.byref(self.handle))
        if status != SMAT_OK:
            raise CError(status, lib.smat_last_error().decode())

    def matte(self, pixels: np.ndarray, prompts: list | None = None, state: int = -1) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels)
        image = image_struct(pixels)
        return _alpha_call(
            self.lib.smat_engine_matte,
            self.lib.smat_engine_last_error,
            self.handle,
            ctypes.byref(image),
            pixels.shape[:2],
            prompts,
            state,
        )

    def close(self) -> None:
        self.lib.smat_engine_close(self.handle)
        self.handle = ctypes.c_void_p()


class Predictor:
    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.lib, self.handle = lib, ctypes.c_void_p()
        status = lib.smat_predictor_open(str(path).encode(), None, ctypes.byref(self.handle))
        if status != SMAT_OK:
            raise CError(status, lib.smat_last_error().decode())

    def embed(self, pixels: np.ndarray) -> tuple[ctypes.c_void_p, tuple[int, int], np.ndarray]:
        pixels = np.ascontiguousarray(pixels)
        embedding = ctypes.c_void_p()
        status = self.lib.smat_predictor_embed(self.handle, ctypes.byref(image_struct(pixels)), ctypes.byref(embedding))
        if status != SMAT_OK:
            raise CError(status, self.lib.smat_predictor_last_error(self.handle).decode())
        return embedding, pixels.shape[:2], pixels

    def predict(self, embedded, prompts: list | None = None, state: int = -1) -> np.ndarray:
        handle, shape, _ = embedded
        return _alpha_call(
            self.lib.smat_predictor_predict,
            self.lib.smat_predictor_last_error,
            self.handle,
            handle,
            shape,
            prompts,
            state,
        )

    def free(self, embedded) -> None:
        self.lib.smat_embedding_free(embedded[0])

    def close(self) -> None:
        self.lib.smat_predictor_close(self.handle)
