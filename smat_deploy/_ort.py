"""ONNX Runtime sessions, made one way for every stage (export parity, artifact gates, Triton configs, the runtime
backend): the one place an ``InferenceSession`` is created.

FP16 graphs (and the TensorRT INT8 file, float16 outside its int8 layers) get basic graph optimisations
only: ORT_ENABLE_ALL's fusions crashed on AutoCast float16 graphs while BASIC ran them correctly. Sessions
log errors only: ONNX Runtime's constant-folding notes on Q/DQ graphs are not the caller's concern.
A model ONNX Runtime cannot load is one :class:`SmatError` line, whichever of its own exception types ONNX Runtime
raised.

float16 QuantizeLinear on the CPU: ONNX specifies ``round(x / scale)`` with ties to even, and TensorRT computes
that, but ONNX Runtime's CPU kernel for float16 input truncates toward zero (microsoft/onnxruntime#18576, fixed
upstream by #32452, after the release pinned here): every quantised activation of the TensorRT INT8 file moves by
up to one step toward zero, and its alpha by about 3e-2 on average. Where the installed ONNX Runtime truncates
(:func:`fp16_quantize_rounds_to_even`), a CPU session of a model with float16 QuantizeLinear nodes runs them
as the specification computes them (:func:`quantize_in_float32`: the float16 input cast to float32, exactly,
and the float16 scale's exact value in float32), so CPU figures are the file's own arithmetic.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

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
    if precision is not None and canonical_precision(precision) in ("fp16", "int8"):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


@functools.cache
def fp16_quantize_rounds_to_even() -> bool:
    """Whether this ONNX Runtime's CPU QuantizeLinear rounds float16 input to nearest, ties to even (ONNX's rule)."""
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [6])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, [6])],
        [
            numpy_helper.from_array(np.array(1.0, np.float16), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    probe = session(model, precision="float32")  # a float32 precision: no rewrite, so no recursion here
    x = np.array([0.75, -0.75, 2.5, 3.5, -2.5, 126.6], np.float16)
    return bool(np.array_equal(probe.run(None, {"x": x})[0], np.array([1, -1, 2, 4, -2, 127], np.int8)))


def quantize_in_float32(model: onnx.ModelProto) -> int:
    """Make every QuantizeLinear with a float16 scale compute in float32: its input through a Cast to float32 and
    a float32 copy of its scale (float16 to float32 is exact, so the result is ONNX's ``round(x / scale)``).
    Returns how many nodes changed. Used for ONNX Runtime CPU sessions only (see the module docstring)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    changed = 0
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        scale = initializers.get(node.input[1]) if node.op_type == "QuantizeLinear" else None
        if scale is None or scale.data_type != TensorProto.FLOAT16:
            continue
        name = f"{node.input[1]}__float32"
        if name not in initializers:
            values = numpy_helper.to_array(scale).astype(np.float32)
            initializers[name] = numpy_helper.from_array(values, name)
            graph.initializer.append(initializers[name])
        cast = helper.make_node(
            "Cast", [node.input[0]], [f"{node.name}__float32_input"], name=f"{node.name}__float32", to=TensorProto.FLOAT
        )
        node.input[0], node.input[1] = cast.output[0], name
        graph.node.insert(index, cast)
        changed += 1
    return changed


def _cpu_arithmetic(model: str | os.PathLike[str] | onnx.ModelProto, precision: str | None) -> onnx.ModelProto | None:
    """The model with its float16 QuantizeLinear nodes in float32 when this ONNX Runtime's CPU kernel truncates
    them; None when nothing needs to change (the common case: no such node, or a correct ONNX Runtime)."""
    if precision is not None and canonical_precision(precision) != "int8":
        return None
    if fp16_quantize_rounds_to_even():
        return None
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model))
        except Exception:  # unreadable: ONNX Runtime says why in its own words below
            return None
    initializers = {i.name: i.data_type for i in model.graph.initializer}
    if not any(
        n.op_type == "QuantizeLinear" and initializers.get(n.input[1]) == TensorProto.FLOAT16 for n in model.graph.node
    ):
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    quantize_in_float32(copy)
    return copy


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
    if list(providers)[:1] == [CPU]:
        model = _cpu_arithmetic(model, precision) or model
    in_memory = isinstance(model, onnx.ModelProto)
    source = model.SerializeToString() if in_memory else str(model)
    name = "the model" if in_memory else str(Path(model))  # type: ignore[arg-type]
    try:
        with _quiet(quiet):
            return ort.InferenceSession(source, session_options(precision, threads), providers=list(providers))
    except Exception as err:  # ONNX Runtime raises its own exception types for unreadable or invalid models
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SmatError(f"ONNX Runtime cannot load {name}: {first}") from None
