"""ONNX Runtime sessions, made one way for every stage (export parity, artifact gates, the runtime backend).

FP16 graphs get basic graph optimisations only: ORT_ENABLE_ALL's fusions crashed on AutoCast
float16 graphs while BASIC ran them correctly. Sessions log errors only: ONNX Runtime's
constant-folding notes on Q/DQ graphs are not the caller's concern.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import onnx
import onnxruntime as ort

from smat_deploy.contract import canonical_precision

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def session_options(precision: str | None = None, threads: int | None = None) -> ort.SessionOptions:
    """Options for a model of ``precision`` (as its manifest records it) with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if precision is not None and canonical_precision(precision) == "fp16":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


def session(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    precision: str | None = None,
    threads: int | None = None,
    providers: Sequence[object] = (CPU,),
) -> ort.InferenceSession:
    """A session for a model file or an in-memory model (CPU unless ``providers`` says otherwise)."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, session_options(precision, threads), providers=list(providers))
