"""The CPU graph, FP16 and both INT8 variants made from the real export, verified on ONNX Runtime CPU."""

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from smat_deploy._files import sha256_of
from smat_deploy._ort import session as ort_session
from smat_deploy.data.calibration import build_calibration_set
from smat_deploy.data.cases import make_case
from smat_deploy.engines import fp16 as fp16_module
from smat_deploy.engines import variants
from smat_deploy.engines.int8 import activation_matmuls
from smat_deploy.engines.tensorrt_build import check_smat_onnx
from smat_deploy.errors import SmatError

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    return build_calibration_set(tmp_path_factory.mktemp("calib"), synthetic=1, size=126)


@pytest.fixture(scope="module")
def workdir(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("variants")
    for name in ("smat.onnx", "smat.json"):
        shutil.copy(exported["dir"] / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def cpu_report(workdir, calibration):
    return variants.make_variant("float32_cpu", workdir / "smat.onnx", calibration)


@pytest.fixture(scope="module")
def fp16_report(workdir, calibration):
    return variants.make_variant("fp16", workdir / "smat.onnx", calibration, holdout=2)


@pytest.fixture(scope="module")
def int8_report(workdir, calibration):
    return variants.make_variant("int8", workdir / "smat.onnx", calibration, holdout=2)


@pytest.fixture(scope="module")
def int8_cpu_report(workdir, calibration):
    return variants.make_variant("int8_cpu", workdir / "smat.onnx", calibration, holdout=2)


def _manifest(path):
    return json.loads(path.with_suffix(".json").read_text())


def _independent_accuracy(path, workdir, size):
    """mean/max |alpha diff| against float32 on composites that neither the quantiser nor the gate saw."""
    feeds = [
        make_case(f"fresh {i}", (size, size + 28), (kind,), seed=777_000 + i).feed()
        for i, kind in enumerate(("none", "point", "box", "mask"))
    ]
    candidate, reference = ort_session(path), ort_session(workdir / "smat.onnx")
    diffs = [np.abs(candidate.run(["alpha"], f)[0] - reference.run(["alpha"], f)[0]) for f in feeds]
    return float(np.mean([d.mean() for d in diffs])), float(np.max([d.max() for d in diffs]))


@pytest.mark.parametrize("kind", ["int8", "int8_cpu"])
def test_int8_files_meet_the_default_budget_on_the_finetuned_weights(kind, int8_report, int8_cpu_report, workdir):
    report = {"int8": int8_report, "int8_cpu": int8_cpu_report}[kind]
    budget = _manifest(report.path)["int8_budget"]
    assert budget["budget"] == {"mean_abs": 5e-3, "max_abs": 0.05, "min_int8_share": 0.9}
    assert budget["passed"] is True
    assert budget["final"]["mean_abs"] <= 5e-3 and budget["final"]["max_abs"] <= 0.05
    assert budget["int8_share_of_weight_flops"] >= 0.9
    # every weight group is listed with its FLOPs; the groups that read the image are float by design
    groups = {g["group"]: g for g in budget["groups"]}
    assert {f"backbone.blocks.{i}.{p}" for i in range(12) for p in ("attn", "mlp")} <= set(groups)
    assert {"decoder.fusion_blks.0", "decoder.matting_head"} <= set(groups)
    # what is not int8 runs in float16 in the TensorRT file (float32 in the CPU file), read from the written file
    not_int8 = "float16" if kind == "int8" else "float32"
    assert groups["decoder.convstream"]["precision"] == not_int8
    assert all(g["sensitivity"] is not None for g in budget["groups"] if g["precision"] == "int8")
    # TensorRT file: Q K^T and P V per block; CPU file: one fused MultiHeadAttention per block
    assert budget["attention_products"]["precision"] == not_int8
    assert budget["attention_products"]["nodes"] >= (24 if kind == "int8" else 12)
    # independent check on inputs of another size that the gate never saw
    mean_abs, max_abs = _independent_accuracy(report.path, workdir, 126)
    assert mean_abs <= 5e-3 and max_abs <= 0.05, (mean_abs, max_abs)


def test_a_broken_calibration_fails_the_int8_gate_and_writes_nothing(workdir, calibration, tmp_path):
    from smat_deploy.data.calibration import CalibrationSet
    from smat_deploy.errors import CheckFailed

    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("smat.onnx", "smat.json"):
        shutil.copy(workdir / name, folder / name)
    (folder / "smat_int8.onnx").write_bytes(b"an older file the failed run must keep")
    # every calibration image one flat grey: the decoder's image features (ConvStream) never vary, so their
    # activation ranges are a fraction of what real inputs reach, and those inputs clip
    grey = CalibrationSet(
        calibration.directory,
        calibration.size,
        np.full_like(calibration.image, 0.5),
        calibration.prompt,
        calibration.state,
        calibration.samples,
    )
    with pytest.raises(CheckFailed, match=r"smat_int8\.onnx misses its budget: .*most sensitive groups: "):
        variants.make_variant("int8", folder / "smat.onnx", grey, holdout=3)
    assert (folder / "smat_int8.onnx").read_bytes() == b"an older file the failed run must keep"
    assert sorted(p.name for p in folder.iterdir()) == ["smat.json", "smat.onnx", "smat_int8.onnx"]


def test_a_file_tensorrt_would_not_fuse_is_refused_and_the_older_one_kept(workdir, calibration, tmp_path, monkeypatch):
    """The float16 step here leaves a Cast between one DequantizeLinear and its MatMul (the layout an AutoCast
    without float16 scales writes): the fusion check refuses the file, exit status 1, nothing replaced."""
    from smat_deploy.errors import CheckFailed

    folder = tmp_path / "unfused"
    folder.mkdir()
    for name in ("smat.onnx", "smat.json"):
        shutil.copy(workdir / name, folder / name)
    (folder / "smat_int8.onnx").write_bytes(b"an older file the failed run must keep")
    real = variants.run_isolated

    def cast_after_a_dq(what, function, *args):
        result = real(what, function, *args)
        if what == "FP16 outside INT8":
            model = onnx.load(args[1])
            dqs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
            consumer = next(n for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in dqs)
            cast = helper.make_node("Cast", [consumer.input[0]], ["dq_cast"], name="dq_cast", to=TensorProto.FLOAT16)
            consumer.input[0] = "dq_cast"
            model.graph.node.insert(list(model.graph.node).index(consumer), cast)
            onnx.save(model, args[1])
        return result

    monkeypatch.setattr(variants, "run_isolated", cast_after_a_dq)
    with pytest.raises(
        CheckFailed,
        match=r"smat_int8\.onnx would not fuse into int8 kernels on TensorRT: .* feeds Cast "
        r"dq_cast: a Cast between a DequantizeLinear and its op",
    ):
        variants.make_variant("int8", folder / "smat.onnx", calibration, holdout=1)
    assert (folder / "smat_int8.onnx").read_bytes() == b"an older file the failed run must keep"
    assert sorted(p.name for p in folder.iterdir()) == ["smat.json", "smat.onnx", "smat_int8.onnx"]


def test_a_tiny_calibration_set_is_refused_before_any_work(workdir, calibration):
    from smat_deploy.data.calibration import CalibrationSet

    tiny = CalibrationSet(
        calibration.directory,
        calibration.size,
        calibration.image[:2],
        calibration.prompt[:2],
        calibration.state[:2],
        calibration.samples[:2],
    )
    with pytest.raises(SmatError, match="has 2 sample\\(s\\); INT8 needs at least 5"):
        variants.make_variant("int8_cpu", workdir / "smat.onnx", tiny)


def test_fp16_keeps_float32_io_and_norms_and_passes_its_gate(fp16_report, calibration, workdir):
    report = fp16_report
    model = onnx.load(report.path)
    # coordinates and interpolation weights (nodes computed from shapes) stay float32
    pinned = set(fp16_module.shape_arithmetic(onnx.load(workdir / "smat.onnx", load_external_data=False)))
    typed = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.value_info, *typed.input, *typed.output]}
    pinned_outputs = [types.get(o) for n in model.graph.node if n.name in pinned for o in n.output]
    assert len(pinned) > 100 and len(pinned_outputs) >= len(pinned)
    assert TensorProto.FLOAT16 not in pinned_outputs and TensorProto.FLOAT in pinned_outputs
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT] * 3
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    half = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert len(half) > 50, "most weights should be float16"
    initializers = {i.name: i for i in model.graph.initializer}
    for node in (n for n in model.graph.node if n.op_type == "LayerNormalization"):
        assert initializers[node.input[1]].data_type == TensorProto.FLOAT, node.name
    accuracy = report.accuracy
    assert accuracy["nonfinite"] == 0 and accuracy["samples"] == len(calibration)
    assert accuracy["mean_abs"] <= 1e-3 and accuracy["max_abs"] <= 2e-2
    manifest = _manifest(report.path)
    assert manifest["precision"] == "fp16" and manifest["accuracy_vs_float32"] == accuracy
    assert manifest["derived_from"]["model"] == "smat.onnx" and manifest["inputs"][0]["name"] == "image"
    assert report.engine is not None or any("engine step skipped" in n for n in report.notes)


def test_cpu_graph_runs_fused_kernels_and_matches_float32_at_every_size(workdir, cpu_report, calibration):
    report = cpu_report
    assert report.path.name == "smat_cpu.onnx"
    model, plain = onnx.load(report.path), onnx.load(workdir / "smat.onnx")
    ops = Counter(n.op_type for n in model.graph.node)
    plain_ops = Counter(n.op_type for n in plain.graph.node)
    assert ops["MultiHeadAttention"] == 12 and ops["BiasGelu"] == 12  # one per DINOv2 block
    assert ops["Softmax"] == plain_ops["Softmax"] - 12  # the blocks' softmaxes live inside the fused attention
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    plain_producers = {o: n.op_type for n in plain.graph.node for o in n.output}
    assert sum(plain_producers.get(n.input[0]) == "Concat" for n in plain.graph.node if n.op_type == "Conv") == 4
    assert not [n.name for n in model.graph.node if n.op_type == "Conv" and producers.get(n.input[0]) == "Concat"]
    manifest = _manifest(report.path)
    assert manifest["precision"] == "float32_cpu"
    assert manifest["cpu_rewrites"] == {"attention": 12, "bias_gelu": 12, "skip_layer_norm": 15, "split_convs": 4}
    # the gate: calibration samples plus the export's eight standard cases (seven sizes, a batch of 3)
    assert report.accuracy["samples"] == len(calibration) + 8
    assert report.accuracy["nonfinite"] == 0 and report.accuracy["max_abs"] <= 1e-4
    assert report.engine is None
    # an independent look: the two graphs on a size the gate did not use
    case = make_case("odd", (203, 331), ("box",), seed=4242).feed()
    ours = ort_session(report.path).run(["alpha"], case)[0]
    theirs = ort_session(workdir / "smat.onnx").run(["alpha"], case)[0]
    assert ours.shape == (1, 1, 203, 331)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_tensorrt_build_refuses_the_cpu_only_graphs(cpu_report, int8_cpu_report):
    for report in (cpu_report, int8_cpu_report):
        with pytest.raises(SmatError, match=r"tuned for ONNX Runtime CPU .*com\.microsoft"):
            check_smat_onnx(report.path)


def test_making_the_variants_leaves_the_float32_model_untouched(
    workdir, cpu_report, fp16_report, int8_report, int8_cpu_report
):
    # Model Optimizer rewrites the file it quantises in place: it must only ever see a copy
    manifest = json.loads((workdir / "smat.json").read_text())
    assert sha256_of(workdir / "smat.onnx") == manifest["sha256"]
    for report in (cpu_report, fp16_report, int8_report, int8_cpu_report):
        assert _manifest(report.path)["derived_from"]["sha256"] == manifest["sha256"]
    assert sorted(p.name for p in workdir.iterdir() if not p.name.startswith("smat")) == []


def test_tensorrt_int8_is_int8_kernels_in_a_float16_graph_with_float32_islands(int8_report):
    report = int8_report
    assert report.fusion["passed"], report.fusion["problems"][:3]
    assert report.fusion["int8_ops"].get("Conv", 0) >= 5 and report.fusion["int8_ops"].get("MatMul", 0) >= 40
    model = onnx.load(report.path)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(model.graph.output)}
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for node in model.graph.node:  # independent re-check of the layout TensorRT fuses
        if node.op_type == "DequantizeLinear":
            assert set(consumers[node.output[0]]) <= {"MatMul", "Gemm", "Conv"}, node.name  # no Cast in between
            assert initializers[node.input[1]].data_type == TensorProto.FLOAT16, node.name  # float16 scale
            source = initializers.get(node.input[0]) or producers[node.input[0]]
            assert getattr(source, "data_type", None) == TensorProto.INT8 or source.op_type == "QuantizeLinear"
        if node.op_type == "QuantizeLinear":
            zero_point = initializers[node.input[2]]
            assert zero_point.data_type == TensorProto.INT8 and not onnx.numpy_helper.to_array(zero_point).any()
            assert node.input[0] not in initializers  # weights are stored int8, quantised in float32 at export
        if node.op_type in ("LayerNormalization", "Softmax"):  # the FP16 artifact's float32 islands
            assert types[node.output[0]] == TensorProto.FLOAT, node.name
        if node.op_type in ("MatMul", "Gemm", "Conv"):  # every other compute op in float16 or int8
            assert types[node.output[0]] == TensorProto.FLOAT16, node.name
    assert report.accuracy["nonfinite"] == 0 and np.isfinite(report.accuracy["Grad"])
    manifest = _manifest(report.path)
    support = manifest["tensorrt_support"]
    assert support["passed"], support["problems"][:3]
    assert support["operators"]["QuantizeLinear"] > 0
    shares, budget = manifest["precision_shares"], manifest["int8_budget"]
    assert shares["attention_products"]["fp16"] >= 0.9 and shares["flops"]["fp32"] == 0
    int8_gflops = budget["int8_share_of_weight_flops"] * budget["weight_gflops"]
    assert shares["flops"]["int8"] * shares["gflops"] == pytest.approx(int8_gflops, rel=0.02)
    assert budget["float_parts_fp32"] is not None and budget["conversion"]["int8_weights"] >= 45
    assert budget["final"]["mean_abs"] <= 5e-3 and budget["final"]["max_abs"] <= 0.05  # gated on the final file
    assert {"quantisation", "sensitivity", "fp16", "gate", "shares"} <= set(manifest["stage_seconds"])
    assert report.size_bytes < 0.4 * (report.path.parent / "smat.onnx").stat().st_size  # int8 weights


def test_cpu_int8_leaves_attention_in_float_and_runs(int8_cpu_report):
    report = int8_cpu_report
    model = onnx.load(report.path)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    attention = set(activation_matmuls(model))
    assert attention
    for node in model.graph.node:
        if node.name in attention:
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.name
    # ONNX Runtime's QDQ layout also wraps the outputs of quantised nodes (its fused int8 kernels need
    # DQ -> op -> Q); what matters is which ops get int8 *weights*, and that Softmax/LayerNorm stay float.
    initializers = {i.name for i in model.graph.initializer}
    weight_dq = {
        n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers
    }
    with_int8_weights = {n.op_type for n in model.graph.node if any(i in weight_dq for i in n.input)}
    assert with_int8_weights == {"MatMul", "Gemm", "Conv"}
    for node in (n for n in model.graph.node if n.op_type in ("Softmax", "LayerNormalization")):
        assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.name
    assert sum(n.op_type == "MultiHeadAttention" for n in model.graph.node) == 12  # float32 attention kernels
    assert report.accuracy["nonfinite"] == 0
    assert report.engine is None  # the CPU variant is never built for TensorRT
    assert _manifest(report.path)["tensorrt_support"] is None


def nan_model(src, dst, calibration_data):
    """A stand-in converter whose model returns sqrt(-1 - prompt): NaN everywhere (module level: picklable)."""
    value = helper.make_tensor_value_info
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Constant", [], ["one"], value=one),
        helper.make_node("Neg", ["prompt"], ["negative"]),
        helper.make_node("Sub", ["negative", "one"], ["below_zero"]),
        helper.make_node("Sqrt", ["below_zero"], ["alpha"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nan",
        [
            value("image", TensorProto.FLOAT, ["b", 3, "h", "w"]),
            value("prompt", TensorProto.FLOAT, ["b", 1, "h", "w"]),
            value("state", TensorProto.FLOAT, ["b", 1]),
        ],
        [value("alpha", TensorProto.FLOAT, ["b", 1, "h", "w"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(dst))


def test_fp16_producing_nan_is_refused_and_leaves_nothing(workdir, calibration, monkeypatch):
    folder = workdir / "nan"
    folder.mkdir()
    shutil.copy(workdir / "smat.onnx", folder / "smat.onnx")
    monkeypatch.setattr(fp16_module, "convert_fp16", nan_model)
    with pytest.raises(SmatError, match="NaN/Inf"):
        variants.make_variant("fp16", folder / "smat.onnx", calibration)
    assert sorted(p.name for p in folder.iterdir()) == ["smat.onnx"]


def test_both_int8_variants_keep_the_image_reading_convs_in_float(int8_report, int8_cpu_report):
    from smat_deploy.engines.int8 import FLOAT_CONV_WEIGHTS

    for name in (int8_report.path, int8_cpu_report.path):
        model = onnx.load(name)
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        image_convs = [n for n in convs if any(k in "".join(n.input) for k in FLOAT_CONV_WEIGHTS)]
        assert len(image_convs) == 4, name  # patch embedding + 3 ConvStream stages
        for node in image_convs:
            assert producers.get(node.input[0]) != "DequantizeLinear", (name, node.name)
        assert any(producers.get(n.input[0]) == "DequantizeLinear" for n in convs if n not in image_convs)
