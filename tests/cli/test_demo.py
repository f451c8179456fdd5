"""``smat-deploy demo``: the report folder, the reuse rule, and bad input."""

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from smat_deploy import __version__
from smat_deploy._files import sha256_of
from smat_deploy._table import markdown_table
from smat_deploy.evaluation.demo import _reusable, _source, parse_precisions
from smat_deploy.evaluation.figures import prompt_overlay, save_heatmap


@pytest.mark.heavy
def test_demo_reuses_a_matching_export_and_writes_a_complete_report(run_cli, exported, tmp_path):
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    for name in ("smat.onnx", "smat.json"):
        shutil.copy(exported["dir"] / name, export_dir / name)
    before = sha256_of(export_dir / "smat.onnx")
    out = tmp_path / "report"
    args = ["--out", out, "--export-dir", export_dir, "--precisions", "none", "--reuse", "--size", "70"]
    result = run_cli("demo", *args, "--iters", "1", "-c", exported["checkpoint"], "--json")
    assert result.code == 0, result.stderr
    assert "reusing" in result.stderr and sha256_of(export_dir / "smat.onnx") == before

    report = json.loads(result.stdout)
    assert report["trained_weights"] and report["weights"] == str(exported["checkpoint"])
    summary = {row["engine"]: row for row in report["summary"]}
    assert list(summary) == ["torch reference", "onnx float32"]
    assert summary["onnx float32"]["max_abs_vs_ref"] <= 1e-4  # same weights on both sides
    assert summary["onnx float32"]["ms_per_image"] > 0 and summary["torch reference"]["speedup_vs_torch"] == 1
    (parity,) = report["parity"]  # one check: the ONNX file against the reference
    assert parity["passed"] and parity["max_abs"] <= 1e-4 and parity["reference"]["real_weights"]
    assert [row["prompts"] for row in parity["rows"]] == ["none", "point", "box", "scribble", "mask"]
    assert summary["onnx float32"]["parity"].startswith("pass")
    truth = np.asarray(Image.open(out / "true_alpha.png"), np.float32) / 255
    auto = np.asarray(Image.open(out / "alpha_torch_reference_auto.png"), np.float32) / 255
    mad = [r["mad_vs_truth"] for r in report["sample"] if r["engine"] == "torch reference" and r["mode"] == "auto"]
    assert abs(np.abs(auto - truth).mean() - mad[0]) < 2 / 255  # the reported MAD is that of the written alpha

    markdown = (out / "report.md").read_text()
    assert str(exported["checkpoint"]) in markdown and "untrained" not in markdown
    pictures = re.findall(r"\]\(([^)]+\.png)\)", markdown)
    assert {"input.png", "prompt_point.png", "cutout_auto.png", "diff_onnx_float32_point.png"} <= set(pictures)
    assert "## Parity" in markdown and any(p.startswith("parity/onnx_float32/worst1_") for p in pictures)
    for picture in pictures:
        assert Image.open(out / picture).size[0] > 0
    assert json.loads((out / "report.json").read_text())["summary"] == report["summary"]


def test_reuse_needs_the_same_file_weights_and_version(tmp_path):
    model = tmp_path / "smat.onnx"
    model.write_bytes(b"model bytes")
    source = _source(None, 0)
    manifest = {"sha256": sha256_of(model), "versions": {"smat_deploy": __version__}, "source": dict(source)}
    (tmp_path / "smat.json").write_text(json.dumps(manifest))
    assert _reusable(model, source) == manifest
    assert _reusable(model, _source(None, 1)) is None  # other seed, other weights
    (tmp_path / "smat.json").write_text(json.dumps({**manifest, "versions": {"smat_deploy": "0.0.0"}}))
    assert _reusable(model, source) is None
    (tmp_path / "smat.json").write_text(json.dumps(manifest))
    model.write_bytes(b"changed")
    assert _reusable(model, source) is None
    assert _reusable(tmp_path / "missing.onnx", source) is None

    variant = tmp_path / "smat_fp16.onnx"
    variant.write_bytes(b"fp16 bytes")
    made_from = {**manifest, "sha256": sha256_of(variant), "derived_from": {"sha256": "a" * 64}}
    (tmp_path / "smat_fp16.json").write_text(json.dumps(made_from))
    assert _reusable(variant, source, "a" * 64) == made_from
    assert _reusable(variant, source, "b" * 64) is None  # made from another float32 file


def test_precisions_parse_and_reject_unknown_names(run_cli, tmp_path):
    assert parse_precisions("cpu,fp16, int8") == ("cpu", "fp16", "int8") and parse_precisions("none") == ()
    result = run_cli("demo", "--out", tmp_path / "o", "--precisions", "fp8")
    assert result.code == 2 and result.stderr.strip() == (
        "error: --precisions: unknown 'fp8' (choose from cpu, fp16, int8, or none)"
    )
    assert not (tmp_path / "o" / "report.md").exists()
    (tmp_path / "file").write_text("x")
    result = run_cli("demo", "--out", tmp_path / "file", "--precisions", "none")
    assert result.code == 2 and "output folder is a file" in result.stderr
    assert (tmp_path / "file").read_text() == "x"


def test_prompt_overlay_tints_only_the_prompt(tmp_path):
    image = np.full((20, 30, 3), 0.5, np.float32)
    prompt = np.zeros((20, 30), np.float32)
    prompt[5:15, 10:20] = 1
    overlay = prompt_overlay(image, prompt)
    assert np.array_equal(overlay[prompt == 0], image[prompt == 0])
    inside = overlay[prompt == 1]
    assert (inside[:, 0] >= 0.79).all() and (inside[:, 2] <= 0.27).all()  # 0.4 * grey + 0.6 * red, or the red edge
    path = save_heatmap(tmp_path / "diff.png", np.abs(image[..., 0] - overlay[..., 0]), "diff")
    assert Image.open(path).format == "PNG"


def test_markdown_table_escapes_pipes():
    table = markdown_table([{"case": "a|b", "value": 0.5}, {"case": "c", "value": None}])
    assert table.splitlines() == ["| case | value |", "|---|---|", "| a\\|b | 0.500 |", "| c | - |"]
    assert markdown_table([]) == "(no rows)"
