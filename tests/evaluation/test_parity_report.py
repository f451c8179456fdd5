"""``run_parity_check``: differences and metrics recomputed independently, tolerances (INT8: the export's gate or
the budget it recorded), NaN outputs, heatmaps, and which weights the reference uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from smat_deploy import images
from smat_deploy.engines.int8_budget import DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS
from smat_deploy.engines.tensorrt_build import ENGINE_MANIFEST_FORMAT
from smat_deploy.errors import SmatError
from smat_deploy.evaluation.parity.report import (
    TOLERANCES,
    default_tolerances,
    resolve_reference,
    run_parity_check,
)
from smat_deploy.metrics import matting_metrics, mean_metrics
from smat_deploy.model import describe_weights


def _reference(model, image, prompt):
    state = torch.tensor([[float(prompt.any())]])
    with torch.inference_mode():
        tensors = (torch.from_numpy(image.transpose(2, 0, 1)[None].copy()), torch.from_numpy(prompt[None, None]), state)
        return model(*tensors).numpy()[0, 0].astype(np.float64)


def test_wrong_engine_fails_with_the_differences_recomputed_independently(
    tmp_path, parity_photos, tiny_onnx, varying_model, tiny_expected_alpha
):
    result = run_parity_check(
        tiny_onnx, parity_photos, prompts="none,box", reference_model=varying_model, out_dir=tmp_path / "out", worst=2
    )
    assert not result.passed
    assert [row["prompts"] for row in result.rows] == ["none", "box"] and all(not r["pass"] for r in result.rows)
    assert result.tolerance == 1e-4 and result.mean_tolerance == 1e-5  # float32 (the tiny model's sidecar)
    # What both models give, computed here: the tiny model is max(mean RGB, prompt * state).
    box = np.zeros((42, 56), np.float32)
    box[8:30, 12:44] = 1  # alpha > 0.5: the 128 rows are not solid
    cat = images.load_image(parity_photos / "cat.png")
    dog = images.load_image(parity_photos / "dog.png")
    central = np.zeros((56, 42), np.float32)
    central[17:39, 13:29] = 1
    expected = {}
    for name, image, prompt in (("cat.png", cat, box), ("dog.png", dog, central)):
        for kind, mask in (("none", np.zeros_like(prompt)), ("box", prompt)):
            state = np.array([[float(mask.any())]], np.float32)
            engine = tiny_expected_alpha(image.transpose(2, 0, 1)[None], mask[None, None], state)[0, 0]
            expected[name, kind] = (engine.astype(np.float64), _reference(varying_model, image, mask))
    gt = np.asarray(Image.open(parity_photos / "cat_alpha.png"), np.float64) / 255
    for row in result.rows:
        pairs = [v for (name, kind), v in expected.items() if kind == row["prompts"]]
        assert row["samples"] == 2
        assert row["max_abs"] == pytest.approx(max(np.abs(e - r).max() for e, r in pairs), abs=1e-6)
        assert row["mean_abs"] == pytest.approx(np.mean([np.abs(e - r).mean() for e, r in pairs]), abs=1e-6)
        want = mean_metrics(matting_metrics(e, np.clip(r, 0, 1)) for e, r in pairs)
        for metric in ("SAD", "MSE", "MAD", "Grad", "Conn"):
            assert row[metric] == pytest.approx(want[metric], rel=1e-3, abs=1e-6), metric
    gt_rows = {(r["prompts"], r["model"]): r for r in result.gt_rows}
    assert set(gt_rows) == {("none", "engine"), ("none", "reference"), ("box", "engine"), ("box", "reference")}
    engine_box, reference_box = expected["cat.png", "box"]
    assert gt_rows["box", "engine"]["samples"] == 1  # only cat.png has an alpha
    assert gt_rows["box", "engine"]["MAD"] == pytest.approx(np.abs(engine_box - gt).mean(), abs=1e-6)
    assert gt_rows["box", "reference"]["SAD"] == pytest.approx(np.abs(np.clip(reference_box, 0, 1) - gt).sum() / 1000)
    # The two worst samples, largest max |diff| first, as PNGs; and the full record.
    worst = sorted(result.samples, key=lambda r: r["max_abs"], reverse=True)[:2]
    assert result.heatmaps == [r["heatmap"] for r in worst]
    for path in result.heatmaps:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width > 3 * png.height
    record = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert record["passed"] is False and len(record["samples"]) == 4 and record["failures"] == result.failures
    assert result.failures[0].startswith("none: max |diff|")


def test_tolerances_decide_and_the_reference_itself_passes_exactly(tmp_path, parity_photos, tiny_onnx, varying_model):
    loose = run_parity_check(
        tiny_onnx,
        parity_photos,
        prompts="point",
        reference_model=varying_model,
        tolerance=1.0,
        mean_tolerance=1.0,
        out_dir=None,
    )
    assert loose.passed and loose.tolerance_source == "given" and loose.heatmaps == [] and loose.report_path is None
    just_below = loose.rows[0]["max_abs"] * 0.999
    options = {"prompts": "point", "reference_model": varying_model, "mean_tolerance": 1.0, "out_dir": None}
    tight = run_parity_check(tiny_onnx, parity_photos, tolerance=just_below, **options)
    assert not tight.passed and "max |diff|" in tight.failures[0] and "mean" not in tight.failures[0]
    same = run_parity_check(
        varying_model, parity_photos, prompts="none,mask", reference_model=varying_model, out_dir=None
    )
    assert same.passed and same.max_abs == 0.0 and all(r["MAD"] == 0.0 for r in same.rows)


def test_reference_weights_follow_the_manifest(tmp_path, tiny_onnx_factory):
    engine = tiny_onnx_factory(tmp_path / "m.onnx")
    manifest = tmp_path / "m.json"

    def record(source):
        manifest.write_text(json.dumps({"precision": "float32", "source": source}))

    default = describe_weights(None, 0)
    record({"checkpoint": None, "checkpoint_sha256": None, "weights": default})
    ref = resolve_reference(engine, None, 0)
    assert ref.engine == "torch" and not ref.real_weights and ref.warnings == () and "recorded in" in ref.chosen_by
    assert "weights as" in resolve_reference(engine, None, 1).warnings[0]  # the engine holds seed 0's weights
    record({"checkpoint": "gone.pth", "checkpoint_sha256": "0" * 64, "weights": "gone.pth"})
    with pytest.raises(SmatError, match=r"exported from gone\.pth .* which is not here; pass --checkpoint"):
        resolve_reference(engine, None, 0)
    ckpt = tmp_path / "gone.pth"
    ckpt.write_bytes(b"weights")
    ref = resolve_reference(engine, None, 0)  # found beside the manifest; its sha256 differs
    assert ref.engine == str(ckpt) and ref.real_weights and "has changed since the export" in ref.warnings[0]
    other = tmp_path / "other.pth"
    other.write_bytes(b"other weights")
    assert "is not the checkpoint the engine was exported from" in resolve_reference(engine, other, 0).warnings[0]
    manifest.unlink()
    assert resolve_reference(engine, None, 0).chosen_by == "default (no manifest records the engine's weights)"


def _nan_onnx(path):
    """A contract model whose alpha is 0/0 everywhere."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 1, "height", "width"]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axis"], ["grey"], keepdims=1),
            helper.make_node("Sub", ["grey", "grey"], ["zero"]),
            helper.make_node("Div", ["zero", "zero"], ["alpha"]),
        ],
        "nan_smat",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
            helper.make_tensor_value_info("prompt", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_nan_output_fails_whatever_the_tolerance(tmp_path, parity_photos, varying_model):
    engine = _nan_onnx(tmp_path / "nan.onnx")
    options = {"prompts": "none", "reference_model": varying_model, "tolerance": 1.0, "mean_tolerance": 1.0}
    result = run_parity_check(engine, parity_photos, worst=1, out_dir=tmp_path / "out", **options)
    assert not result.passed and result.rows[0]["nonfinite"] == 42 * 56 + 56 * 42
    assert result.failures == [f"none: {42 * 56 + 56 * 42} NaN/Inf values"]
    assert result.max_abs == 1.0  # a NaN pixel counts as the whole alpha range
    record = json.loads((tmp_path / "out" / "parity.json").read_text(), parse_constant=pytest.fail)  # no NaN/Infinity
    assert record["samples"][0]["nonfinite"] == 42 * 56


# -- INT8 tolerances: the export's gate, or the budget the export recorded --------------------------------
def _record_budget(manifest, mean_abs, max_abs):
    record = json.loads(manifest.read_text())
    budget = {"mean_abs": mean_abs, "max_abs": max_abs, "min_int8_share": 0.9}
    record["int8_budget"] = {"budget": budget, "final": {"mean_abs": mean_abs / 2, "max_abs": max_abs / 2}}
    manifest.write_text(json.dumps(record))


def test_int8_defaults_are_the_export_gate_unless_a_budget_is_recorded(tmp_path, tiny_onnx_factory):
    assert TOLERANCES["int8"] == TOLERANCES["int8_cpu"] == (DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS)
    assert default_tolerances("int8_cpu") == (DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS, "default for int8_cpu")
    onnx_dir, engine_dir = tmp_path / "export", tmp_path / "engines"
    onnx_dir.mkdir()
    engine_dir.mkdir()
    onnx_path = tiny_onnx_factory(onnx_dir / "smat_int8.onnx", precision="int8")
    manifest = onnx_dir / "smat_int8.json"
    assert default_tolerances("int8", manifest) == (DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS, "default for int8")
    _record_budget(manifest, 2e-3, 0.03)
    assert default_tolerances("int8", manifest) == (0.03, 2e-3, f"INT8 budget recorded in {manifest}")
    assert default_tolerances("fp16", manifest) == (2e-2, 1e-3, "default for fp16")  # other precisions: unchanged
    # A TensorRT engine's manifest names its source ONNX, whose manifest has the budget.
    plan_manifest = engine_dir / "smat_int8.json"
    plan_manifest.write_text(
        json.dumps({"format": ENGINE_MANIFEST_FORMAT, "precision": "int8", "source_onnx": str(onnx_path)})
    )
    assert default_tolerances("int8", plan_manifest) == (0.03, 2e-3, f"INT8 budget recorded in {manifest}")
    _record_budget(manifest, -1.0, 0.03)
    with pytest.raises(SmatError, match=r"smat_int8\.json: the INT8 budget's mean \|diff\| must be a positive"):
        default_tolerances("int8", plan_manifest)


def _off_by_onnx(path, alpha):
    """A contract model that returns the fixed ``alpha`` (H x W) whatever the image: an engine that is off by design."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = ["batch", 1, "height", "width"]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axis"], ["grey"], keepdims=1),
            helper.make_node("Mul", ["grey", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "target"], ["alpha"]),
        ],
        "off_smat",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
            helper.make_tensor_value_info("prompt", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, shape)],
        initializer=[
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            numpy_helper.from_array(alpha[None, None].astype(np.float32), "target"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({"precision": "int8"}))
    return path


def test_int8_engine_off_by_a_mean_of_1e_2_fails_by_default(tmp_path, parity_photos, varying_model):
    """1% mean error, within the max bound: the INT8 gate fails it; a budget recorded at export decides instead."""
    cat = images.load_image(parity_photos / "cat.png")
    reference = _reference(varying_model, cat, np.zeros(cat.shape[:2], np.float32))
    error = np.full(reference.shape, 0.01)
    error[5, 7] = 0.04
    engine = _off_by_onnx(tmp_path / "smat_int8.onnx", reference + error)
    options = {"prompts": "none", "limit": 1, "reference_model": varying_model, "out_dir": None}
    result = run_parity_check(engine, parity_photos, **options)
    row = result.rows[0]
    assert row["samples"] == 1
    assert row["mean_abs"] == pytest.approx(error.mean(), abs=1e-5) and row["max_abs"] == pytest.approx(0.04, abs=1e-5)
    assert (result.tolerance, result.mean_tolerance, result.tolerance_source) == (0.05, 5e-3, "default for int8")
    assert not result.passed and result.failures == ["none: mean |diff| 1.00e-02 > 0.005"]
    manifest = tmp_path / "smat_int8.json"
    _record_budget(manifest, 0.02, 0.05)  # exported with a looser budget: parity holds it to that one
    recorded = run_parity_check(engine, parity_photos, **options)
    assert recorded.passed and recorded.tolerance_source == f"INT8 budget recorded in {manifest}"
    assert (recorded.tolerance, recorded.mean_tolerance) == (0.05, 0.02)
