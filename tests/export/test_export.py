"""The exported ONNX model: file, manifest, parity, golden data, and agreement with ``matte``."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from smat_deploy._files import sha256_of
from smat_deploy.export.graph_checks import check_graph

pytestmark = pytest.mark.heavy


def test_writes_a_plain_onnx_model_and_a_complete_manifest(exported):
    onnx_path = exported["dir"] / "smat.onnx"
    raw = onnx_path.read_bytes()
    model = onnx.load_from_string(raw)  # the whole file is one ModelProto: nothing prepended
    onnx.checker.check_model(model)
    manifest = json.loads((exported["dir"] / "smat.json").read_text())
    assert manifest["sha256"] == sha256_of(onnx_path) and manifest["size_bytes"] == len(raw)
    assert [(i["name"], i["dtype"], i["shape"]) for i in manifest["inputs"]] == [
        ("image", "float32", ["batch", 3, "height", "width"]),
        ("prompt", "float32", ["batch", 1, "height", "width"]),
        ("state", "float32", ["batch", 1]),
    ]
    assert manifest["outputs"][0]["name"] == "alpha" and manifest["outputs"][0]["range"] == [0.0, 1.0]
    assert manifest["dimensions"]["height"]["min"] == 14 and manifest["dimensions"]["height"]["max"] >= 2048
    assert manifest["opset"] == 18
    assert {"smat_deploy", "torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["export_seconds"] > 0 and manifest["exported_at"]
    assert manifest["source"]["checkpoint"] == str(exported["checkpoint"])
    assert manifest["source"]["checkpoint_sha256"] == sha256_of(exported["checkpoint"])
    assert manifest["model_config"]["backbone"]["embed_dim"] == 384
    assert all(c["passed"] for c in manifest["graph_checks"]) and len(manifest["graph_checks"]) == 7


def test_parity_covers_the_required_cases_within_1e4(exported):
    parity = exported["parity"]
    cases = parity["cases"]
    sizes = {c["size"] for c in cases}
    assert len(sizes) >= 6 and "518x518" in sizes
    assert any(int(h) % 14 and int(w) % 14 for h, w in (s.split("x") for s in sizes))
    assert any(int(h) > int(w) for h, w in (s.split("x") for s in sizes))  # tall
    assert any(int(h) < int(w) for h, w in (s.split("x") for s in sizes))  # wide
    assert {c["batch"] for c in cases} == {1, 3}
    kinds = {k for c in cases for k in c["prompts"].split(",")}
    assert kinds == {"none", "point", "box", "scribble", "mask"}
    assert parity["passed"] and parity["tolerance"] == 1e-4
    assert all(c["max_abs"] <= 1e-4 for c in cases)
    assert min(c["alpha_std"] for c in cases) > 0.03, "parity on a near-constant alpha would prove little"


def test_exported_graph_passes_every_tensorrt_readiness_check(exported):
    checks = check_graph(onnx.load(exported["dir"] / "smat.onnx"), expected_layer_norms=28)
    assert [c.name for c in checks if not c.passed] == []


def test_golden_data_round_trips_through_polygraphy(exported):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    feeds = load_json(str(exported["dir"] / "golden" / "inputs.json"))
    results = RunResults.load(str(exported["dir"] / "golden" / "outputs.json"))
    ((runner, iterations),) = results.items()
    assert runner == "pytorch-reference" and len(feeds) == len(iterations) == 8
    session = ort.InferenceSession(str(exported["dir"] / "smat.onnx"), providers=["CPUExecutionProvider"])
    for feed, iteration in zip(feeds, iterations, strict=True):
        assert set(feed) == {"image", "prompt", "state"}
        alpha = session.run(["alpha"], feed)[0]
        assert np.abs(alpha - iteration["alpha"]).max() <= 1e-4


def test_onnx_on_an_odd_sized_photo_matches_smat_deploy_matte(exported, run_cli, tmp_path):
    rng = np.random.default_rng(5)
    photo = np.clip(rng.random((1, 1, 3)) * 0.5 + rng.random((83, 121, 3)) * 0.5, 0, 1)
    Image.fromarray((photo * 255).astype(np.uint8)).save(tmp_path / "odd.png")
    args = ("--point", "60,40", "-o", tmp_path / "alpha.png", "-c", exported["checkpoint"])
    result = run_cli("matte", tmp_path / "odd.png", *args)
    assert result.code == 0, result.stderr
    cli_alpha = np.asarray(Image.open(tmp_path / "alpha.png")).astype(np.float32) / 255

    image = np.asarray(Image.open(tmp_path / "odd.png")).astype(np.float32).transpose(2, 0, 1)[None] / 255
    prompt = np.zeros((1, 1, 83, 121), np.float32)
    prompt[0, 0, 20:61, 40:81] = 1  # the 41x41 square of --point 60,40
    session = ort.InferenceSession(str(exported["dir"] / "smat.onnx"), providers=["CPUExecutionProvider"])
    alpha = session.run(["alpha"], {"image": image, "prompt": prompt, "state": np.ones((1, 1), np.float32)})[0]
    assert alpha.shape == (1, 1, 83, 121)
    assert alpha.std() > 0.03
    assert np.abs(alpha[0, 0] - cli_alpha).max() <= 1 / 255 + 1e-6  # the CLI writes 8 bits
