"""Accuracy-controlled INT8: layer groups, their sensitivity, and returning groups to float until a budget holds.

The budget is scored on what users see, the alpha: mean and max |alpha - float32 alpha| on held-out
images that the quantiser never calibrated on. Like NNCF's accuracy-controlled quantisation and
Polygraphy's ``debug precision``, but per layer *group* of SMat (one ViT block's attention or MLP, one
part of the prompt cross-attention, one decoder stage):

1. quantise every weight-bearing MatMul/Gemm/Conv (the caller does this once);
2. measure each group's sensitivity: the alpha error with *only that group* returned to float
   (``leave one out``): the larger the drop from the all-int8 error, the more the group costs;
3. while the budget does not hold, return the most sensitive group still in int8 to float and measure
   again; fail when the int8 share of the weight FLOPs would fall below :data:`MIN_INT8_SHARE`.

Returning a group to float rewires its compute nodes to the float tensors their Q/DQ pairs were
made from and drops the pairs nothing reads any more, so no other node's quantisation changes and
no recalibration is needed. Everything here works on ONNX models in memory with ONNX Runtime CPU.
"""

from __future__ import annotations

import ast
import copy
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from smat_deploy._ort import session as ort_session
from smat_deploy.contract import INT8_GATE, MIN_INT8_SHARE
from smat_deploy.errors import SmatError

#: The gate every INT8 file must meet against float32, unless the user sets another budget.
DEFAULT_MEAN_ABS = INT8_GATE.mean_abs
DEFAULT_MAX_ABS = INT8_GATE.max_abs
#: One sample per prompt kind at least; fewer leaves whole activation ranges unseen.
MIN_CALIBRATION_SAMPLES = 5
#: Held-out samples each group's sensitivity is scored on (those where the all-int8 error is largest).
SENSITIVITY_SAMPLES = 4
COMPUTE_OP_TYPES = ("MatMul", "Gemm", "Conv")
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class Budget:
    """Bounds on mean and max |alpha diff| against float32, and the least int8 share of weight FLOPs."""

    mean_abs: float = DEFAULT_MEAN_ABS
    max_abs: float = DEFAULT_MAX_ABS
    min_int8_share: float = MIN_INT8_SHARE

    def __post_init__(self) -> None:
        for name, value in (("mean", self.mean_abs), ("max", self.max_abs)):
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise SmatError(f"the INT8 budget's {name} |diff| must be a positive number, got {value!r}")
        if not 0 <= self.min_int8_share <= 1:
            raise SmatError(f"the least int8 share must lie in [0, 1], got {self.min_int8_share!r}")

    def holds(self, accuracy: Accuracy) -> bool:
        return accuracy.nonfinite == 0 and accuracy.mean_abs <= self.mean_abs and accuracy.max_abs <= self.max_abs

    def excess(self, accuracy: Accuracy) -> float:
        """How far over the budget, as the larger of the two ratios (<= 1: within)."""
        return max(accuracy.mean_abs / self.mean_abs, accuracy.max_abs / self.max_abs)

    def as_dict(self) -> dict:
        return {"mean_abs": self.mean_abs, "max_abs": self.max_abs, "min_int8_share": self.min_int8_share}


@dataclass(frozen=True)
class Accuracy:
    mean_abs: float
    max_abs: float
    worst: str  # the sample with the largest max |diff|
    nonfinite: int = 0
    per_sample_max: tuple[float, ...] = ()
    per_sample_mean: tuple[float, ...] = ()
    #: the candidate's alphas, one per sample (float32), for further metrics without another run
    alphas: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)

    def as_dict(self) -> dict:
        return {
            "mean_abs": self.mean_abs,
            "max_abs": self.max_abs,
            "worst_sample": self.worst,
            "nonfinite": self.nonfinite,
        }


# -- groups -------------------------------------------------------------------------------------------------
def _module_path(node: onnx.NodeProto) -> str | None:
    """The innermost ``model.*`` module a node was exported from (torch.onnx records the name scopes)."""
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            modules = [s for s in scopes if isinstance(s, str) and s.startswith("model.")]
            return modules[-1].removeprefix("model.") if modules else None
    return None


_GROUP_RULES = (
    (re.compile(r"backbone\.blocks\.(\d+)\.(attn|mlp)\b"), lambda m: f"backbone.blocks.{m[1]}.{m[2]}"),
    (re.compile(r"prompt_cross_attn\.layers\.0\.(self_attn|multihead_attn)\b"), lambda m: f"cross_attn.{m[1]}"),
    (re.compile(r"prompt_cross_attn\.layers\.0\.linear\d"), lambda m: "cross_attn.ffn"),
    (re.compile(r"decoder\.(fusion_blks\.\d+|matting_head|convstream)\b"), lambda m: f"decoder.{m[1]}"),
    (re.compile(r"backbone\.patch_embed\b"), lambda m: "backbone.patch_embed"),
)


def group_of(node: onnx.NodeProto) -> str:
    """Layer group of a compute node: one block's attention or MLP, a cross-attention part, a decoder stage."""
    path = _module_path(node)
    if path is None:
        return f"other.{node.name}"
    for pattern, name in _GROUP_RULES:
        match = pattern.match(path)
        if match:
            return name(match)
    return path


def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that are weights, possibly through a Transpose/Reshape/Cast/DequantizeLinear of a weight."""
    constants = {init.name for init in model.graph.initializer}
    passthrough = ("Transpose", "Reshape", "Cast", "Identity", "DequantizeLinear", "QuantizeLinear")
    for node in model.graph.node:  # topological order
        if node.op_type == "Constant" or (node.op_type in passthrough and node.input and node.input[0] in constants):
            constants.update(node.output)
    return constants


def weight_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul/Gemm/Conv nodes with a constant operand (the layers that carry weights)."""
    constants = constant_tensors(model)
    return [n for n in model.graph.node if n.op_type in COMPUTE_OP_TYPES and any(i in constants for i in n.input[:2])]


def activation_products(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMuls whose operands are both activations (attention products, the position-table resize), and
    ONNX Runtime's fused MultiHeadAttention nodes, which hold the attention products of the CPU graph."""
    constants = constant_tensors(model)
    return [
        n
        for n in model.graph.node
        if (n.op_type == "MatMul" and not any(i in constants for i in n.input[:2])) or n.op_type == "MultiHeadAttention"
    ]


def layer_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Weight-bearing compute node names by layer group, in graph order."""
    groups: dict[str, list[str]] = {}
    for node in weight_nodes(model):
        groups.setdefault(group_of(node), []).append(node.name)
    return groups


# -- FLOPs --------------------------------------------------------------------------------------------------
def node_flops(model: onnx.ModelProto, feed: dict[str, np.ndarray], nodes: Sequence[str]) -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of ``nodes`` (MatMul/Gemm/Conv) for one ``feed``, from the real shapes.

    The float model is run once with the compute nodes' operands and results as extra outputs, so the
    count holds for any input size without symbolic shape inference through SMat's dynamic shapes.
    """
    wanted = set(nodes)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    chosen = [n for n in probe.graph.node if n.name in wanted]
    existing = {o.name for o in probe.graph.output}
    names: list[str] = []
    for node in chosen:
        for name in (node.input[0], node.input[1], node.output[0]):
            if name not in names:
                names.append(name)
    initializers = {init.name: init for init in probe.graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {name: tuple(init.dims) for name, init in initializers.items()}
    shapes.update({name: value.shape for name, value in feed.items()})
    wanted_outputs = [name for name in names if name not in shapes]
    probe.graph.output.extend(
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in wanted_outputs
        if name not in existing
    )
    if wanted_outputs:  # run([]) would return every output
        values = ort_session(probe).run(wanted_outputs, feed)
        shapes.update({name: value.shape for name, value in zip(wanted_outputs, values, strict=True)})
    return {node.name: flops_of(node, shapes) for node in chosen}


def flops_of(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-add FLOPs (2 per MAC) of one MatMul/Gemm/Conv/ConvTranspose/MultiHeadAttention, from its operands'
    and result's shapes."""
    first, second, out = (shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]])
    if node.op_type == "MultiHeadAttention":  # ONNX Runtime's fused attention: Q K^T and P V, [B, S, D] each
        batch, tokens, hidden = out
        keys = second[1] if len(second) == 3 else tokens
        return 2 * 2 * batch * tokens * keys * hidden
    if node.op_type == "Conv":
        per_output = int(np.prod(second[1:]))  # Cin/groups * kh * kw
    elif node.op_type == "ConvTranspose":
        return 2 * int(np.prod(first)) * int(np.prod(second[1:]))  # every input value meets Cout/groups * kh * kw
    elif node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        per_output = first[0] if trans_a else first[-1]
    else:
        per_output = first[-1]
    return 2 * int(np.prod(out)) * int(per_output)


# -- float-ifying ---------------------------------------------------------------------------------------------
def return_to_float(
    model: onnx.ModelProto, nodes: set[str], float_weights: dict[str, onnx.TensorProto] | None = None
) -> int:
    """Run ``nodes`` in float again: feed them the float tensors their Q/DQ pairs quantise. Returns inputs rewired.

    Two layouts are handled. Model Optimizer's (TensorRT) quantises weights through QuantizeLinear ->
    DequantizeLinear too, so every float source is still in the graph. ONNX Runtime's (CPU) stores
    weights as int8 initializers ``<name>_quantized`` read by a DequantizeLinear: their float values
    come from ``float_weights`` (the model before quantisation, by initializer name). ONNX Runtime
    also quantises the *outputs* of quantised nodes for its fused int8 kernels; consumers of such an
    output that are not themselves int8 compute nodes read the float output again.
    Q/DQ pairs that nothing reads any more are dropped.
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name for init in graph.initializer}
    still_int8 = quantized_nodes(model) - nodes
    rewired = 0
    for node in graph.node:
        if node.name not in nodes:
            continue
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = dq.input[0]
            q = producers.get(source)
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0]
            elif source in initializers and float_weights is not None:
                stem = source.removesuffix("_quantized")
                if stem not in float_weights:
                    raise SmatError(f"cannot return {node.name} to float: no float weight {stem!r}")
                name = f"{stem}__float" if stem in producers else stem  # a DQ may output the weight's old name
                if name not in initializers:
                    weight = onnx.TensorProto()
                    weight.CopyFrom(float_weights[stem])
                    weight.name = name
                    graph.initializer.append(weight)
                    initializers.add(name)
                node.input[index] = name
            else:
                raise SmatError(f"cannot return {node.name} to float: its input {name} has no float source")
            rewired += 1
        for output in node.output:
            for q in [c for c in consumers.get(output, []) if c.op_type == "QuantizeLinear"]:
                for dq in [c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]:
                    for reader in consumers.get(dq.output[0], []):
                        if reader.name in still_int8:
                            continue
                        for index, name in enumerate(reader.input):
                            if name == dq.output[0]:
                                reader.input[index] = output
                                rewired += 1
    drop_unused_qdq(model)
    return rewired


def drop_unused_qdq(model: onnx.ModelProto) -> None:
    """Remove DequantizeLinear/QuantizeLinear nodes nothing reads, then the initializers left unused (their
    scales and zero points)."""
    graph = model.graph
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        for node in [n for n in graph.node if n.op_type == op_type and n.output[0] not in used]:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def quantized_nodes(model: onnx.ModelProto) -> set[str]:
    """Compute nodes reading at least one DequantizeLinear output."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return {
        n.name
        for n in model.graph.node
        if n.op_type in COMPUTE_OP_TYPES
        and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
    }


# -- scoring --------------------------------------------------------------------------------------------------
class AlphaScorer:
    """Mean and max |alpha diff| of candidate models against float32 alphas computed once."""

    def __init__(
        self,
        reference: ort.InferenceSession | None,
        feeds: Sequence[tuple[str, dict[str, np.ndarray]]],
        expected: Sequence[np.ndarray] | None = None,
    ) -> None:
        if not feeds:
            raise SmatError("no held-out images to measure INT8 accuracy on")
        self.names = [name for name, _ in feeds]
        self.feeds = [feed for _, feed in feeds]
        if expected is None:
            if reference is None:
                raise SmatError("AlphaScorer needs a reference session or the expected alphas")
            expected = [reference.run(["alpha"], feed)[0].astype(np.float64) for feed in self.feeds]
        self.reference = list(expected)

    def __len__(self) -> int:
        return len(self.feeds)

    def subset(self, indices: Sequence[int]) -> AlphaScorer:
        """A scorer on some of the samples (no reference run needed), of the same kind as this one."""
        picked = copy.copy(self)
        picked.names = [self.names[i] for i in indices]
        picked.feeds = [self.feeds[i] for i in indices]
        picked.reference = [self.reference[i] for i in indices]
        return picked

    def runner(self, model: onnx.ModelProto | ort.InferenceSession) -> ort.InferenceSession:
        """What runs a feed to ``alpha`` for ``model`` (a subclass may wrap it, e.g. with a decoder)."""
        return model if isinstance(model, ort.InferenceSession) else ort_session(model)

    def __call__(self, model: onnx.ModelProto | ort.InferenceSession) -> Accuracy:
        session = self.runner(model)
        means, maxes, nonfinite, alphas = [], [], 0, []
        for feed, expected in zip(self.feeds, self.reference, strict=True):
            alpha = session.run(["alpha"], feed)[0]
            alphas.append(alpha.astype(np.float32))
            got = alpha.astype(np.float64)
            bad = ~np.isfinite(got)
            nonfinite += int(bad.sum())
            diff = np.where(bad, 1.0, np.abs(got - expected))
            means.append(float(diff.mean()))
            maxes.append(float(diff.max()))
        worst = int(np.argmax(maxes))
        return Accuracy(
            float(np.mean(means)),
            float(np.max(maxes)),
            self.names[worst],
            nonfinite,
            tuple(maxes),
            tuple(means),
            tuple(alphas),
        )


# -- the budget -------------------------------------------------------------------------------------------------
@dataclass
class GroupRecord:
    name: str
    nodes: list[str]
    gflops: float
    #: Accuracy with only this group returned to float (None: not measured, e.g. kept float by design).
    alone_in_float: Accuracy | None = None
    precision: str = "int8"
    why: str = "within budget"

    def gain(self, base: Accuracy, budget: Budget) -> float:
        """How much returning this group alone to float lowers the budget excess (larger: more sensitive)."""
        if self.alone_in_float is None:
            return 0.0
        return budget.excess(base) - budget.excess(self.alone_in_float)

    def as_dict(self, base: Accuracy, budget: Budget) -> dict:
        alone = self.alone_in_float
        return {
            "group": self.name,
            "nodes": len(self.nodes),
            "gflops": round(self.gflops, 3),
            "precision": self.precision,
            "why": self.why,
            "alone_in_float": None if alone is None else alone.as_dict(),
            "sensitivity": None if alone is None else round(self.gain(base, budget), 6),
        }


@dataclass
class BudgetReport:
    budget: Budget
    all_int8: Accuracy
    final: Accuracy
    groups: list[GroupRecord]
    attention: dict
    steps: list[dict] = field(default_factory=list)
    measured_on: str = ""
    #: all-int8 accuracy on the samples the sensitivities were scored on
    sensitivity_base: Accuracy | None = None
    #: the final accuracy on the held-out samples alone, when some gate samples are not held out
    held_out: dict | None = None
    #: seconds per stage of the fit (all-int8 scoring, sensitivities, budget steps)
    seconds: dict = field(default_factory=dict)
    #: the fitted model's accuracy before its float parts went to float16 (TensorRT file; None: not converted)
    float_parts_fp32: Accuracy | None = None
    #: what the conversion to float16 outside the int8 layers did (TensorRT file)
    conversion: dict | None = None

    @property
    def weight_gflops(self) -> float:
        return sum(g.gflops for g in self.groups)

    @property
    def int8_share(self) -> float:
        total = self.weight_gflops
        return sum(g.gflops for g in self.groups if g.precision == "int8") / total if total else 0.0

    @property
    def passed(self) -> bool:
        return self.budget.holds(self.final) and self.int8_share >= self.budget.min_int8_share

    def most_sensitive(self, count: int = 3) -> list[GroupRecord]:
        measured = [g for g in self.groups if g.alone_in_float is not None]
        base = self.sensitivity_base or self.all_int8
        return sorted(measured, key=lambda g: g.gain(base, self.budget), reverse=True)[:count]

    def as_dict(self) -> dict:
        return {
            "budget": self.budget.as_dict(),
            "measured_on": self.measured_on,
            "held_out_only": self.held_out,
            "all_int8": self.all_int8.as_dict(),
            "final": self.final.as_dict(),
            "passed": self.passed,
            "int8_share_of_weight_flops": round(self.int8_share, 4),
            "weight_gflops": round(self.weight_gflops, 3),
            "attention_products": self.attention,
            "returned_to_float": [step["group"] for step in self.steps],
            "steps": self.steps,
            "sensitivity_base": None if self.sensitivity_base is None else self.sensitivity_base.as_dict(),
            "float_parts_fp32": None if self.float_parts_fp32 is None else self.float_parts_fp32.as_dict(),
            "stage_seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "conversion": self.conversion,
            "groups": [g.as_dict(self.sensitivity_base or self.all_int8, self.budget) for g in self.groups],
        }

    def failure(self, what: str) -> str:
        """One line: by how much the budget is missed, and the most sensitive groups."""
        final, budget = self.final, self.budget
        parts = []
        if final.nonfinite:
            parts.append(f"{final.nonfinite} NaN/Inf values")
        if final.mean_abs > budget.mean_abs:
            parts.append(
                f"mean |diff| {final.mean_abs:.2e} > {budget.mean_abs:g} ({final.mean_abs / budget.mean_abs:.1f}x)"
            )
        if final.max_abs > budget.max_abs:
            parts.append(f"max |diff| {final.max_abs:.3f} > {budget.max_abs:g} ({final.max_abs / budget.max_abs:.1f}x)")
        if self.int8_share < budget.min_int8_share:
            parts.append(f"only {self.int8_share:.0%} of weight FLOPs left in int8 (< {budget.min_int8_share:.0%})")
        sensitive = ", ".join(g.name for g in self.most_sensitive())
        return f"{what} misses its budget: {'; '.join(parts)}; most sensitive groups: {sensitive or 'none measured'}"


def fit_budget(
    quantized: onnx.ModelProto,
    float_model: onnx.ModelProto,
    score: AlphaScorer,
    budget: Budget,
    flops_feed: dict[str, np.ndarray],
    *,
    float_weights: dict[str, onnx.TensorProto] | None = None,
    sensitivity_samples: int | None = SENSITIVITY_SAMPLES,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[onnx.ModelProto, BudgetReport]:
    """Return groups of ``quantized`` to float, most sensitive first, until ``budget`` holds (see module docstring).

    ``quantized`` is not modified; the returned model is the one that met the budget, or the last one
    tried (check ``report.passed``). Node names must match between ``quantized`` and ``float_model``.
    Sensitivities are scored on the ``sensitivity_samples`` held-out samples with the largest all-int8
    max |diff| (where the budget binds; None: all of them); every budget decision on all samples.
    """
    groups_by_name = layer_groups(float_model)
    int8_now = quantized_nodes(quantized)
    products = activation_products(float_model)
    weight_node_names = [n for nodes in groups_by_name.values() for n in nodes]
    flops = node_flops(float_model, flops_feed, weight_node_names + [n.name for n in products])  # one run
    records = [GroupRecord(name, nodes, sum(flops[n] for n in nodes) / 1e9) for name, nodes in groups_by_name.items()]
    for record in records:
        if not any(n in int8_now for n in record.nodes):
            record.precision = "float32"
            record.why = (
                "kept float by design (reads the image itself)"
                if record.name in ("backbone.patch_embed", "decoder.convstream")
                else "left in float by the quantiser"
            )
    attention = {
        "nodes": len(products),
        "gflops": round(sum(flops[n.name] for n in products) / 1e9, 3),
        "precision": "int8" if any(n.name in int8_now for n in products) else "float32",
        "why": "activation x activation products (attention, position-table resize): not weight layers, not counted "
        "in the int8 share",
    }
    clock = time.perf_counter()
    progress("all groups int8")
    base = score(quantized)
    order_by_max = np.argsort(base.per_sample_max)[::-1]
    probe = score if sensitivity_samples is None else score.subset(sorted(order_by_max[:sensitivity_samples]))
    probe_base = probe(quantized) if probe is not score else base
    seconds = {"all_int8": time.perf_counter() - clock}
    clock = time.perf_counter()
    candidates = [r for r in records if r.precision == "int8"]
    for index, record in enumerate(candidates, 1):
        progress(f"sensitivity {index}/{len(candidates)}: {record.name}")
        trial = _copy(quantized)
        return_to_float(trial, set(record.nodes), float_weights)
        record.alone_in_float = probe(trial)
    seconds["sensitivity"] = time.perf_counter() - clock
    clock = time.perf_counter()
    report = BudgetReport(budget, base, base, records, attention, sensitivity_base=probe_base, seconds=seconds)
    report.measured_on = f"{len(score)} held-out samples; sensitivities on the {len(probe)} with the largest max |diff|"
    current = quantized
    order = sorted(
        (r for r in records if r.precision == "int8" and r.alone_in_float is not None),
        key=lambda r: r.gain(probe_base, budget),
        reverse=True,
    )
    accuracy = base
    for record in order:
        if budget.holds(accuracy):
            break
        if report.int8_share - record.gflops / max(report.weight_gflops, 1e-12) < budget.min_int8_share:
            record.why = "too large to return to float within the least int8 share"
            continue  # a mostly-float "int8" file is no answer: try the next, smaller group
        progress(f"returning {record.name} to float")
        trial = _copy(current)
        return_to_float(trial, set(record.nodes), float_weights)
        trial_accuracy = score(trial)
        if budget.excess(trial_accuracy) >= budget.excess(accuracy):
            excess = budget.excess(trial_accuracy)
            record.why = f"returning it to float did not help on all samples (excess {excess:.2f})"
            continue
        record.precision = "float32"
        record.why = f"returned to float: budget exceeded {budget.excess(accuracy):.2f}x before this step"
        accuracy = report.final = trial_accuracy
        report.steps.append({"group": record.name, **accuracy.as_dict(), "int8_share": round(report.int8_share, 4)})
        current = trial
    seconds["budget_steps"] = time.perf_counter() - clock
    return (current if current is not quantized else _copy(quantized)), report


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy
