"""ONNX Runtime sessions, made one way for every stage (export parity, artifact gates, Triton configs, the runtime
backend): the one place an ``InferenceSession`` is created.

FP16 graphs get basic graph optimisations only: ORT_ENABLE_ALL's fusions crashed on AutoCast
float16 graphs while BASIC ran them correctly. Sessions log errors only: ONNX Runtime's
constant-folding notes on Q/DQ graphs are not the caller's concern. A model ONNX Runtime cannot load
is one :class:`SmatError` line, whichever of its own exception types ONNX Runtime raised.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
import onnxruntime as ort

from smat_deploy.contract import canonical_precision
from smat_deploy.errors import SmatError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_DEFAULT_LOG_SEVERITY = 2  # warnings, ONNX Runtime's own default


def session_options(precision: str | None = None, threads: int | None = None) -> ort.SessionOptions:
    """Options for a model of ``precision`` (as its manifest records it) with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if precision is not None and canonical_precision(precision) == "fp16":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


@contextlib.contextmanager
def _quiet(active: bool) -> Iterator[None]:
    """Hide ONNX Runtime's multi-line log while a provider that may fail loads; the caller reports it in one line."""
    if not active:
        yield
        return
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_DEFAULT_LOG_SEVERITY)


def session(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    precision: str | None = None,
    threads: int | None = None,
    providers: Sequence[object] = (CPU,),
    quiet: bool = False,
) -> ort.InferenceSession:
    """A session for a model file or an in-memory model (CPU unless ``providers`` says otherwise).

    ``quiet``: hide ONNX Runtime's own log while loading (a GPU provider that fails to load is then reported by
    the caller, in one line). Loading errors are one :class:`SmatError` line.
    """
    in_memory = isinstance(model, onnx.ModelProto)
    source = model.SerializeToString() if in_memory else str(model)
    name = "the model" if in_memory else str(Path(model))  # type: ignore[arg-type]
    try:
        with _quiet(quiet):
            return ort.InferenceSession(source, session_options(precision, threads), providers=list(providers))
    except Exception as err:  # ONNX Runtime raises its own exception types for unreadable or invalid models
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SmatError(f"ONNX Runtime cannot load {name}: {first}") from None
