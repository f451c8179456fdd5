"""``smat-deploy parity``: exit 1 on a wrong engine, 0 on a passing one, 2 with one ``error:`` line on bad input
or after skipped photos; the real float32 export on a calibration set (heavy)."""

from __future__ import annotations

import json

import pytest

from smat_deploy.data.calibration import build_calibration_set
from smat_deploy.engines.int8_budget import DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS


def _one_error(result, message):
    assert result.code == 2, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("\r")]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_wrong_engine_exits_1_with_a_summary_line(run_cli, tmp_path, parity_photos, tiny_onnx, fast_reference):
    out = tmp_path / "out"
    result = run_cli(
        "parity", "--engine", tiny_onnx, "--data", parity_photos, "--prompts", "none", "--output", out, "--worst", "1"
    )
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: parity failed ({tiny_onnx}): none: max |diff|")
    assert "parity FAIL" in result.stdout and "against ground-truth alpha (1 image(s)" in result.stdout
    assert "built-in default: seed 0" in result.stdout and "NOT trained" in result.stdout
    assert len(list(out.glob("worst1_*_none.png"))) == 1


def test_cli_passing_run_json_and_skipped_photos(run_cli, tmp_path, parity_photos, fast_reference):
    args = ("--data", parity_photos, "--prompts", "box", "--worst", "0", "--json", "--output", tmp_path / "out")
    result = run_cli("parity", "--engine", "torch", *args)
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["passed"] and record["max_abs"] == 0.0 and record["data"]["samples"] == 2
    assert record["reference"]["real_weights"] is False and record["heatmaps"] == []
    (parity_photos / "zz_broken.png").write_bytes(b"\x89PNG broken")
    skipped = run_cli(
        "parity", "--engine", "torch", "--data", parity_photos, "--prompts", "none", "--output", tmp_path / "o2"
    )
    assert skipped.code == 2 and "parity PASS" in skipped.stdout
    assert "warning: skipped zz_broken.png: cannot read image" in skipped.stderr
    assert "error: 1 input(s) were skipped (of 3 images" in skipped.stderr


def test_cli_bad_input_is_one_error_line(run_cli, tmp_path, parity_photos, tiny_onnx, tiny_onnx_factory):
    fixed = tiny_onnx_factory(tmp_path / "fixed.onnx", size=(28, 28), batch=1)
    wrong = tiny_onnx_factory(tmp_path / "wrong.onnx", names=("image", "hint", "state", "alpha"))
    (tmp_path / "model.bin").write_bytes(b"?")
    cases = [
        (("--engine", tmp_path / "model.bin"), "unknown engine type 'model.bin'"),
        (("--engine", wrong), "does not match the SMat contract"),
        (("--engine", fixed), "cat.png is 56x42 at --max-side 518: height 42 is outside what"),
        (("--engine", tmp_path / "none.onnx"), "engine not found"),
        (("--engine", tiny_onnx, "--prompts", "clicks"), "unknown prompt kind(s) clicks"),
        (("--engine", tiny_onnx, "--data", tmp_path / "nowhere"), "data folder not found"),
        (("--engine", tiny_onnx, "--max-side", "5"), "--max-side must be 0 (full size) or at least 14"),
        (("--engine", tiny_onnx, "--tolerance", "-1"), "--tolerance must be a number >= 0"),
    ]
    for args, message in cases:
        data = () if "--data" in args else ("--data", parity_photos)
        _one_error(run_cli("parity", *data, *args, "--output", tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.heavy
def test_real_export_passes_on_a_calibration_set(run_cli, tmp_path, exported, fast_reference):
    """The float32 ONNX export against the reference it was exported from, on composites with exact alpha."""
    build_calibration_set(tmp_path / "calib", synthetic=1, size=112, builtin_photos=False)
    onnx_path = exported["dir"] / "smat.onnx"
    result = run_cli(
        "parity", "--engine", onnx_path, "--data", tmp_path / "calib", "--output", tmp_path / "out", "--json"
    )
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["reference"]["chosen_by"] == f"recorded in {exported['dir'] / 'smat.json'}"
    assert [row["prompts"] for row in record["rows"]] == ["none", "point", "box", "scribble", "mask"]
    assert 0 < record["max_abs"] <= 1e-4
    assert min(s["alpha_std"] for s in record["samples"]) > 0.01  # real mattes, not a constant
    assert len(record["ground_truth_rows"]) == 10 and len(record["heatmaps"]) == 3


def test_help_shows_examples_and_the_exit_status(run_cli):
    result = run_cli("parity", "--help")
    assert result.code == 0 and "smat-deploy parity --engine export/smat.onnx" in result.stdout
    assert "Exit status" in result.stdout and "fp16 0.02/0.001" in result.stdout
    text = " ".join(result.stdout.split())
    assert f"int8 {DEFAULT_MAX_ABS:g}/{DEFAULT_MEAN_ABS:g}, int8_cpu {DEFAULT_MAX_ABS:g}/{DEFAULT_MEAN_ABS:g}" in text
    assert "the one its manifest records (int8_budget)" in text


def test_cli_int8_tolerance_is_the_recorded_budget(run_cli, tmp_path, parity_photos, tiny_onnx_factory, fast_reference):
    engine = tiny_onnx_factory(tmp_path / "smat_int8.onnx", precision="int8")
    args = ("parity", "--engine", engine, "--data", parity_photos, "--prompts", "none", "--worst", "0", "--json")
    default = json.loads(run_cli(*args, "--output", tmp_path / "o1").stdout)["tolerance"]
    assert default == {"max_abs": DEFAULT_MAX_ABS, "mean_abs": DEFAULT_MEAN_ABS, "source": "default for int8"}
    manifest = tmp_path / "smat_int8.json"
    budget = {"mean_abs": 1e-3, "max_abs": 0.02, "min_int8_share": 0.9}
    manifest.write_text(json.dumps({"precision": "int8", "int8_budget": {"budget": budget}}))
    result = run_cli(*args, "--output", tmp_path / "o2")
    assert result.code == 1  # the tiny model is not SMat
    recorded = json.loads(result.stdout)["tolerance"]
    assert recorded == {"max_abs": 0.02, "mean_abs": 1e-3, "source": f"INT8 budget recorded in {manifest}"}
