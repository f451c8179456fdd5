"""Precision variants of the interactive pair, made from a real export of the fine-tuned weights and checked end to
end (variant encoder -> variant decoder) against the float32 whole model, run here with ONNX Runtime directly."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from smat_deploy import Predictor
from smat_deploy._files import sha256_of
from smat_deploy._ort import session as ort_session
from smat_deploy.contract import EMBEDDING_NAMES, EXPORT_GATE, FP16_GATE, INT8_GATE, MIN_INT8_SHARE, pair_file
from smat_deploy.data.calibration import build_calibration_set
from smat_deploy.data.cases import make_case
from smat_deploy.engines import cpu_graph, pair_variants
from smat_deploy.errors import CheckFailed, SmatError

PAIR_FILES = (
    "smat.onnx",
    "smat.json",
    "smat_encoder.onnx",
    "smat_encoder.json",
    "smat_decoder.onnx",
    "smat_decoder.json",
)


@pytest.fixture(scope="session")
def exported_pair(tmp_path_factory, finetuned_checkpoint):
    """One export of the fine-tuned weights with the interactive pair (the float32 sources of every variant)."""
    from smat_deploy.export.pipeline import export_float32

    out = tmp_path_factory.mktemp("pair-export")
    export_float32(checkpoint=finetuned_checkpoint, output_dir=out, check=False, interactive=True)
    return out


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    return build_calibration_set(tmp_path_factory.mktemp("pair-calib"), synthetic=1, size=126)


def _copy_pair(source, folder):
    folder.mkdir(exist_ok=True)
    for name in PAIR_FILES:
        shutil.copy(source / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def workdir(exported_pair, tmp_path_factory):
    return _copy_pair(exported_pair, tmp_path_factory.mktemp("pair-variants"))


@pytest.fixture(scope="module")
def cpu_pair(workdir, calibration):
    # Every rewritten half kept (timing decides nothing here), so the files' structure is known.
    return pair_variants.make_pair_variant("float32_cpu", workdir, calibration, only_where_faster=False)


@pytest.fixture(scope="module")
def fp16_pair(workdir, calibration):
    return pair_variants.make_pair_variant("fp16", workdir, calibration)


@pytest.fixture(scope="module")
def int8_cpu_pair(workdir, calibration):
    return pair_variants.make_pair_variant("int8_cpu", workdir, calibration, holdout=2, only_where_faster=False)


def _fresh_feeds():
    """Composites neither the converters nor the gates saw, at sizes off the patch grid, one with batch 2."""
    return [
        make_case("fresh a", (130, 158), ("point",), seed=615_000).feed(),
        make_case("fresh b", (97, 211), ("none", "box"), seed=615_100).feed(),
        make_case("fresh c", (168, 140), ("mask",), seed=615_200).feed(),
    ]


def _end_to_end(folder, kind):
    """mean and max |alpha diff| of the written variant pair, run here, against smat.onnx on fresh composites."""
    options = {"precision": kind}
    encoder = ort_session(folder / pair_file("encoder", kind), **options)
    decoder = ort_session(folder / pair_file("decoder", kind), **options)
    whole = ort_session(folder / "smat.onnx")
    means, maxes = [], []
    for feed in _fresh_feeds():
        embedding = dict(
            zip(EMBEDDING_NAMES, encoder.run(list(EMBEDDING_NAMES), {"image": feed["image"]}), strict=True)
        )
        got = decoder.run(["alpha"], embedding | {"prompt": feed["prompt"], "state": feed["state"]})[0]
        expected = whole.run(["alpha"], feed)[0]
        assert got.shape == expected.shape and np.isfinite(got).all()
        diff = np.abs(got.astype(np.float64) - expected)
        means.append(diff.mean())
        maxes.append(diff.max())
    return float(np.mean(means)), float(np.max(maxes))


def _manifest(path):
    return json.loads(path.with_suffix(".json").read_text())


def _check_manifests(folder, report, kind):
    float32 = {role: _manifest(folder / pair_file(role)) for role in ("encoder", "decoder")}
    for role, other in (("encoder", "decoder"), ("decoder", "encoder")):
        path = folder / pair_file(role, kind)
        manifest = _manifest(path)
        assert manifest["pair"] == {
            "role": role,
            "partner": pair_file(other, kind),
            "weights_sha256": float32[role]["pair"]["weights_sha256"],
        }
        assert manifest["precision"] == kind
        assert manifest["half_precision"] == report.halves[role].precision
        assert manifest["sha256"] == sha256_of(path)
        assert manifest["derived_from"] == {"model": pair_file(role), "sha256": sha256_of(folder / pair_file(role))}
        assert manifest["inputs"] == float32[role]["inputs"] and manifest["outputs"] == float32[role]["outputs"]
        assert manifest["accuracy_vs_float32"]["end_to_end"] is True


# -- refusals (no export needed) ----------------------------------------------------------------------------------
def test_a_folder_without_the_pair_is_refused(tmp_path, tiny_onnx):
    folder = tmp_path / "whole only"
    folder.mkdir()
    shutil.copy(tiny_onnx, folder / "smat.onnx")
    with pytest.raises(SmatError, match=r"smat_encoder\.onnx, smat_decoder\.onnx.*--interactive"):
        pair_variants.make_pair_variant("float32_cpu", folder, calibration=None)
    with pytest.raises(SmatError, match="unknown precision 'bf16'"):
        pair_variants.make_pair_variant("bf16", folder, calibration=None)
    assert sorted(p.name for p in folder.iterdir()) == ["smat.onnx"]


def test_time_ratio_is_the_median_of_interleaved_rounds(tiny_onnx):
    feed = make_case("t", (20, 30), ("point",), seed=1).feed()
    speed = pair_variants.time_against(tiny_onnx, tiny_onnx, feed, precision="float32_cpu", rounds=5, threads=1)
    assert len(speed["round_ratios"]) == 5 and speed["input"] == "20x30" and speed["threads"] == 1
    assert speed["ratio"] == pytest.approx(float(np.median(speed["round_ratios"])), abs=1e-3)
    assert (
        pair_variants.pays({"ratio": 0.8}) and not pair_variants.pays({"ratio": 1.0}) and not pair_variants.pays(None)
    )


# -- float32_cpu ------------------------------------------------------------------------------------------------------
@pytest.mark.heavy
def test_cpu_pair_matches_the_float32_model_end_to_end(workdir, cpu_pair):
    mean_abs, max_abs = _end_to_end(workdir, "float32_cpu")
    assert max_abs <= EXPORT_GATE.max_abs and mean_abs <= EXPORT_GATE.mean_abs
    assert cpu_pair.accuracy["max_abs"] <= EXPORT_GATE.max_abs and cpu_pair.accuracy["nonfinite"] == 0
    assert cpu_pair.accuracy["samples"] > 8  # calibration set plus the 8 standard cases
    _check_manifests(workdir, cpu_pair, "float32_cpu")


@pytest.mark.heavy
def test_cpu_pair_rewrites_each_half_and_records_its_timing(workdir, cpu_pair):
    encoder = onnx.load(workdir / "smat_encoder_cpu.onnx")
    assert sum(n.op_type == "MultiHeadAttention" for n in encoder.graph.node) == 12
    original, decoder = (onnx.load(workdir / name) for name in ("smat_decoder.onnx", "smat_decoder_cpu.onnx"))

    def concat_convs(model):
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        return sum(n.op_type == "Conv" and producers.get(n.input[0]) == "Concat" for n in model.graph.node)

    assert concat_convs(original) > 0 and concat_convs(decoder) == 0
    assert _manifest(workdir / "smat_decoder_cpu.onnx")["cpu_rewrites"]["split_convs"] == concat_convs(original)
    for role in ("encoder", "decoder"):
        speed = _manifest(workdir / pair_file(role, "float32_cpu"))["speed_vs_float32_cpu"]
        assert speed["threads"] == pair_variants.SPEED_THREADS and len(speed["round_ratios"]) == speed["rounds"]
        assert speed["float32_s"] > 0 and speed["variant_s"] > 0


@pytest.mark.heavy
def test_predictor_opens_the_cpu_pair_and_matches_the_whole_model(workdir, cpu_pair):
    predictor = Predictor.open(workdir, precision="cpu", threads=2)
    assert predictor.precision == "float32_cpu"
    assert predictor.info["details"]["encoder"].endswith("smat_encoder_cpu.onnx")
    whole = ort_session(workdir / "smat.onnx")
    feed = _fresh_feeds()[1]
    embedding = predictor.embed(feed["image"])
    alpha = predictor.predict(embedding, prompt=feed["prompt"], state=feed["state"])
    assert np.abs(np.asarray(alpha) - whole.run(["alpha"], feed)[0]).max() <= EXPORT_GATE.max_abs


@pytest.mark.heavy
def test_a_wrong_transformation_fails_the_gate_and_writes_nothing(exported_pair, calibration, tmp_path, monkeypatch):
    folder = _copy_pair(exported_pair, tmp_path / "broken")
    (folder / "smat_encoder_cpu.onnx").write_bytes(b"older file")
    real_split = cpu_graph.split_concat_convs

    def split_with_wrong_weights(model):
        count = real_split(model)
        part = next(i for i in model.graph.initializer if i.name.endswith("__part1"))
        part.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(part) * 1.5, part.name))
        return count

    monkeypatch.setattr(cpu_graph, "split_concat_convs", split_with_wrong_weights)
    with pytest.raises(CheckFailed, match=r"end to end.*nothing was written"):
        pair_variants.make_pair_variant("float32_cpu", folder, calibration, only_where_faster=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*PAIR_FILES, "smat_encoder_cpu.onnx"])
    assert (folder / "smat_encoder_cpu.onnx").read_bytes() == b"older file"


@pytest.mark.heavy
def test_a_pair_from_other_weights_is_refused(exported_pair, tmp_path):
    folder = _copy_pair(exported_pair, tmp_path / "mixed")
    manifest = _manifest(folder / "smat_decoder.onnx")
    manifest["pair"]["weights_sha256"] = "0" * 64
    (folder / "smat_decoder.json").write_text(json.dumps(manifest))
    with pytest.raises(SmatError, match="different weights"):
        pair_variants.make_pair_variant("float32_cpu", folder, calibration=None)


# -- fp16 -------------------------------------------------------------------------------------------------------------
@pytest.mark.heavy
def test_fp16_pair_converts_both_halves_and_passes_its_gate_end_to_end(workdir, fp16_pair):
    mean_abs, max_abs = _end_to_end(workdir, "fp16")
    assert mean_abs <= FP16_GATE.mean_abs and max_abs <= FP16_GATE.max_abs
    _check_manifests(workdir, fp16_pair, "fp16")
    for role in ("encoder", "decoder"):
        model = onnx.load(workdir / pair_file(role, "fp16"))
        initializers = {i.data_type for i in model.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in initializers, role
        assert all(
            v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output]
        )
        assert fp16_pair.halves[role].tensorrt_support["passed"]


# -- int8_cpu ---------------------------------------------------------------------------------------------------------
@pytest.mark.heavy
def test_int8_cpu_pair_quantises_the_encoder_within_the_budget(workdir, int8_cpu_pair):
    mean_abs, max_abs = _end_to_end(workdir, "int8_cpu")
    assert mean_abs <= INT8_GATE.mean_abs and max_abs <= INT8_GATE.max_abs
    _check_manifests(workdir, int8_cpu_pair, "int8_cpu")
    encoder = onnx.load(workdir / "smat_encoder_int8_cpu.onnx")
    assert sum(n.op_type == "DequantizeLinear" for n in encoder.graph.node) > 0
    assert int8_cpu_pair.budget.passed and int8_cpu_pair.budget.int8_share >= MIN_INT8_SHARE
    assert int8_cpu_pair.halves["decoder"].precision == "float32"
    assert sha256_of(workdir / "smat_decoder_int8_cpu.onnx") == sha256_of(workdir / "smat_decoder.onnx")


# -- int8 (TensorRT) ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_pair(workdir, calibration):
    return pair_variants.make_pair_variant("int8", workdir, calibration, holdout=2)


@pytest.mark.heavy
def test_int8_pair_encoder_is_int8_in_float16_and_passes_the_fusion_check(workdir, int8_pair):
    from smat_deploy.export.tensorrt_fusion import check_fusion

    mean_abs, max_abs = _end_to_end(workdir, "int8")
    assert mean_abs <= INT8_GATE.mean_abs and max_abs <= INT8_GATE.max_abs
    _check_manifests(workdir, int8_pair, "int8")
    encoder = onnx.load(workdir / "smat_encoder_int8.onnx")
    report = check_fusion(encoder)  # run again here, on the written file
    assert report["passed"] and report["int8_ops"].get("MatMul", 0) >= 40 and set(report["scale_types"]) == {"FLOAT16"}
    assert int8_pair.halves["encoder"].fusion == report
    manifest = json.loads((workdir / "smat_encoder_int8.json").read_text())
    assert manifest["tensorrt_fusion"]["passed"] and manifest["int8_budget"]["conversion"]["int8_weights"] >= 45
    assert int8_pair.budget.passed and int8_pair.budget.int8_share >= MIN_INT8_SHARE
    # for TensorRT the decoder, not quantised, runs in float16 too (the int8_cpu pair's stays float32)
    assert int8_pair.halves["decoder"].precision == "fp16"
    decoder = onnx.load(workdir / "smat_decoder_int8.onnx")
    assert onnx.TensorProto.FLOAT16 in {i.data_type for i in decoder.graph.initializer}
    assert int8_pair.halves["decoder"].tensorrt_support["passed"]
