"""``smat-deploy demo``: the report folder, the reuse rule, the demo weights and their cache, and bad input."""

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from smat_deploy import __version__
from smat_deploy._files import sha256_of
from smat_deploy._table import markdown_table
from smat_deploy.apps.demo import DemoConfig, DemoReport, _reusable, _source, parse_precisions, write_report
from smat_deploy.apps.figures import prompt_overlay, save_heatmap
from smat_deploy.train import FinetuneConfig, demo_weights
from smat_deploy.train.demo_weights import (
    CACHE_ENV,
    DEMO_COMPOSITES,
    DEMO_FINETUNE,
    default_cache_dir,
    demo_checkpoint,
    demo_checkpoint_path,
    describe_demo_weights,
    weights_key,
)


@pytest.mark.heavy
def test_demo_on_its_demo_weights_reuses_a_matching_export_and_writes_a_complete_report(
    run_cli, exported, finetuned_checkpoint, tmp_path, monkeypatch
):
    """``demo`` without ``-c``: the cached demo weights (the ``finetuned_checkpoint`` recipe), labelled as such."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = demo_checkpoint_path(cache)
    shutil.copy(finetuned_checkpoint, cached)  # same recipe and code, so the same key: found, not rebuilt
    made = cached.stat().st_mtime_ns
    monkeypatch.setenv(CACHE_ENV, str(cache))
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    names = (
        "smat.onnx",
        "smat.json",
        "smat_encoder.onnx",
        "smat_encoder.json",
        "smat_decoder.onnx",
        "smat_decoder.json",
    )
    for name in names:
        shutil.copy(exported["dir"] / name, export_dir / name)
    before = sha256_of(export_dir / "smat.onnx")
    out = tmp_path / "report"
    args = ["--output", out, "--export-dir", export_dir, "--precisions", "none", "--reuse", "--size", "70"]
    result = run_cli("demo", *args, "--iters", "1", "--json")
    assert result.code == 0, result.stderr
    label = "fine-tuned 40 steps on synthetic composites, not a real SMat checkpoint"
    assert result.stderr.splitlines()[0] == f"weights: {label} ({cached})"
    assert "(cached)" in result.stderr and "fine-tuning demo weights" not in result.stderr
    assert cached.stat().st_mtime_ns == made
    # The export was made from the fixture checkpoint: the same sha256 as the demo weights, so it is reused.
    assert "reusing" in result.stderr and sha256_of(export_dir / "smat.onnx") == before

    report = json.loads(result.stdout)
    assert report["demo_weights"] and report["trained_weights"] and report["weights"].startswith(label)
    assert report["stages"][0]["stage"].startswith("demo weights")
    summary = {row["engine"]: row for row in report["summary"]}
    assert list(summary) == ["torch reference", "onnx float32"]
    assert summary["onnx float32"]["max_abs_vs_ref"] <= 1e-4  # same weights on both sides
    assert summary["onnx float32"]["ms_per_image"] > 0 and summary["torch reference"]["speedup_vs_torch"] == 1
    (parity,) = report["parity"]  # one check: the ONNX file against the reference
    assert parity["passed"] and parity["max_abs"] <= 1e-4
    assert [row["prompts"] for row in parity["rows"]] == ["none", "point", "box", "scribble", "mask"]
    # the same default data on every machine: a bundled real photo and a composite, every prompt kind
    assert parity["data"]["kind"] == "bundled" and parity["data"]["images"] == 2 and len(parity["samples"]) == 10
    assert summary["onnx float32"]["parity"].startswith("pass")
    truth = np.asarray(Image.open(out / "true_alpha.png"), np.float32) / 255
    auto = np.asarray(Image.open(out / "alpha_torch_reference_auto.png"), np.float32) / 255
    mad = [r["mad_vs_truth"] for r in report["sample"] if r["engine"] == "torch reference" and r["mode"] == "auto"]
    assert abs(np.abs(auto - truth).mean() - mad[0]) < 2 / 255  # the reported MAD is that of the written alpha
    # A matte with structure, not the whole photo half transparent: the object stands out of the background.
    assert auto[truth > 0.99].mean() > 0.9 and auto[truth < 0.01].mean() < 0.4 and mad[0] < 0.35

    markdown = (out / "report.md").read_text()
    assert f"**Weights:** {label}" in markdown and "not a real SMat checkpoint" in markdown.split("## Summary")[0]
    assert "untrained" not in markdown
    pictures = re.findall(r"\]\(([^)]+\.png)\)", markdown)
    assert {"input.png", "prompt_point.png", "cutout_auto.png", "diff_onnx_float32_point.png"} <= set(pictures)
    assert "## Parity" in markdown and any(p.startswith("parity/onnx_float32/worst1_") for p in pictures)
    for picture in pictures:
        assert Image.open(out / picture).size[0] > 0
    assert json.loads((out / "report.json").read_text())["summary"] == report["summary"]


def test_a_checkpoint_is_named_in_the_report_without_the_demo_weights_caveat(tmp_path):
    report = DemoReport(weights="smat.pth", engines=[])
    markdown = write_report(DemoConfig(out=tmp_path), report).read_text()
    assert "**Weights:** smat.pth" in markdown and "demo weights" not in markdown
    report.demo_weights, report.weights = True, describe_demo_weights()
    markdown = write_report(DemoConfig(out=tmp_path), report).read_text()
    assert "not a real SMat checkpoint" in markdown.split("## Summary")[0]
    assert json.loads((tmp_path / "report.json").read_text())["demo_weights"] is True


def test_demo_weights_are_built_once_and_keyed_by_the_recipe(tmp_path, monkeypatch):
    """Tiny recipe (one step at 70 px): the second call finds the file; another recipe gets another file."""
    tiny = FinetuneConfig(steps=1, batch_size=1, size=70, lr=1e-3, freeze_backbone=True, seed=0)
    messages = []
    path = demo_checkpoint(tmp_path, config=tiny, composites=2, log=messages.append)
    assert path == demo_checkpoint_path(tmp_path, config=tiny, composites=2) and path.is_file()
    assert (
        messages[0]
        == f"fine-tuning demo weights: 1 steps on synthetic composites (first run only, cached in {tmp_path})"
    )
    assert torch.load(path, weights_only=True)["config"] == tiny.to_dict()
    made = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the checkpoint is cached")

    monkeypatch.setattr(demo_weights, "finetune", no_training)
    assert demo_checkpoint(tmp_path, config=tiny, composites=2, log=messages.append) == path
    assert path.stat().st_mtime_ns == made and messages[-1] == f"demo weights: {path} (cached)"

    key = weights_key(tiny, 2)
    assert key == weights_key(tiny, 2) and weights_key(replace(tiny, steps=2), 2) != key
    assert weights_key(replace(tiny, lr=2e-3), 2) != key and weights_key(tiny, 3) != key
    assert weights_key() == weights_key(DEMO_FINETUNE, DEMO_COMPOSITES) != key
    assert path.name == f"demo-weights-{key}.pth"
    assert describe_demo_weights() == "fine-tuned 40 steps on synthetic composites, not a real SMat checkpoint"


def test_demo_weights_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "smat-deploy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "smat-deploy"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert demo_checkpoint_path().parent == tmp_path / "mine"


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
    result = run_cli("demo", "--output", tmp_path / "o", "--precisions", "fp8")
    assert result.code == 2 and result.stderr.strip() == (
        "error: --precisions: unknown 'fp8' (choose from cpu, fp16, int8, or none)"
    )
    assert not (tmp_path / "o" / "report.md").exists()
    (tmp_path / "file").write_text("x")
    result = run_cli("demo", "--output", tmp_path / "file", "--precisions", "none")
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
