"""Walk an exported graph and check that TensorRT (and every other runtime) can take it as is.

Each property SPEC'd for the export is one check with a name and a reason, so a failure says which
property broke and where, and the manifest records all of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import onnx

from smat_deploy.contract import INPUTS, OUTPUTS
from smat_deploy.export.onnx_export import MIN_OPSET

CONTROL_FLOW_OPS = {"Loop", "If", "Scan", "SequenceMap"}
# A LayerNorm the exporter decomposed shows up as ReduceMean + Sub + Pow + Sqrt.
DECOMPOSED_NORM_OPS = {"ReduceMean", "Sqrt"}


def _expected(specs: list[dict]) -> dict[str, tuple]:
    return {spec["name"]: tuple(spec["shape"]) for spec in specs}


@dataclass(frozen=True)
class GraphCheck:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _dims(value: onnx.ValueInfoProto) -> tuple:
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def _ancestor_initializers(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """Names of initializers (weights) that ``tensor`` depends on."""
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {init.name for init in graph.initializer}
    seen, stack, found = set(), [tensor], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in initializers:
            found.add(name)
        elif name in producers:
            stack.extend(i for i in producers[name].input if i)
    return found


def _input_data_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors whose values depend on the graph inputs' values (not merely on their shapes)."""
    derived = {i.name for i in graph.input}
    for node in graph.node:  # nodes are topologically sorted in a valid model
        if node.op_type != "Shape" and any(i in derived for i in node.input):
            derived.update(node.output)
    return derived


def check_graph(
    model: onnx.ModelProto,
    expected_layer_norms: int | None = None,
    io: tuple[list[dict], list[dict]] = (INPUTS, OUTPUTS),
) -> list[GraphCheck]:
    """Every TensorRT-readiness property of an exported SMat graph, as a list of checks.

    ``io``: the contract's inputs and outputs the graph must declare (the whole model's by default;
    ``contract.PAIR_IO[role]`` for a half of the interactive pair).
    """
    expected_inputs, expected_outputs = _expected(io[0]), _expected(io[1])
    graph = model.graph
    ops = Counter(node.op_type for node in graph.node if node.domain in ("", "ai.onnx"))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    checks = [GraphCheck("opset", opset >= MIN_OPSET, f"opset {opset} (need >= {MIN_OPSET})")]

    norms = ops.get("LayerNormalization", 0)
    decomposed = {op: ops[op] for op in DECOMPOSED_NORM_OPS if ops.get(op)}
    count_ok = expected_layer_norms is None or norms == expected_layer_norms
    checks.append(
        GraphCheck(
            "layernorm_single_nodes",
            norms > 0 and count_ok and not decomposed,
            f"{norms} LayerNormalization nodes"
            + (f" (expected {expected_layer_norms})" if expected_layer_norms is not None else "")
            + (f"; decomposed-norm ops present: {decomposed}" if decomposed else ""),
        )
    )
    flow = sorted(op for op in ops if op in CONTROL_FLOW_OPS)
    checks.append(GraphCheck("no_control_flow", not flow, f"control-flow ops: {flow}" if flow else "no Loop/If/Scan"))

    resizes = [n for n in graph.node if n.op_type == "Resize"]
    antialiased = [n.name for n in resizes if any(a.name == "antialias" and a.i for a in n.attribute)]
    checks.append(
        GraphCheck(
            "no_antialias_resize",
            not antialiased,
            f"antialiased Resize: {antialiased}" if antialiased else f"{len(resizes)} Resize nodes, none antialiased",
        )
    )
    # A Resize of the position table reads weights only (its sizes may come from the image's shape).
    image_data = _input_data_tensors(graph)
    pos_resize = [
        n.name
        for n in resizes
        if n.input[0] not in image_data and any("pos_embed" in w for w in _ancestor_initializers(graph, n.input[0]))
    ]
    checks.append(
        GraphCheck(
            "pos_embed_not_resized_by_resize",
            not pos_resize,
            f"Resize on the position table: {pos_resize}" if pos_resize else "position table resized by MatMul",
        )
    )

    inputs = {i.name: i for i in graph.input}
    input_problems = [f"unexpected input {n}" for n in inputs if n not in expected_inputs]
    for name, dims in expected_inputs.items():
        value = inputs.get(name)
        if value is None:
            input_problems.append(f"missing input {name}")
        elif value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or _dims(value) != dims:
            input_problems.append(
                f"{name} is {onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)} {_dims(value)}"
            )
    outputs = {o.name: o for o in graph.output}
    for name, dims in expected_outputs.items():
        value = outputs.get(name)
        if value is None or _dims(value) != dims or value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            input_problems.append(f"output {name} is {None if value is None else _dims(value)}")
    checks.append(
        GraphCheck(
            "io_contract",
            not input_problems,
            "; ".join(input_problems)
            or f"float32 {'/'.join(expected_inputs)} -> {'/'.join(expected_outputs)} with symbolic batch and sizes; "
            "no shape-driving scalar inputs",
        )
    )
    doubles = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.DOUBLE]
    doubles += [
        n.name
        for n in graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute)
    ]
    checks.append(GraphCheck("no_float64", not doubles, f"float64 tensors: {doubles[:5]}" if doubles else "no float64"))
    return checks


def failed(checks: list[GraphCheck]) -> list[GraphCheck]:
    return [c for c in checks if not c.passed]
