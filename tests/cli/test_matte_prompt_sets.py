"""``smat-deploy matte`` with several ``--prompt`` files: one embedding, one alpha per prompt set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from smat_deploy.model import save_checkpoint


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "photo.png"
    Image.fromarray((rng.random((60, 75, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def prompt_files(tmp_path):
    sets = {
        "click": [{"type": "point", "x": 20, "y": 15, "radius": 6}],
        "box": [{"type": "box", "x0": 30, "y0": 20, "x1": 70, "y1": 55}],
        "nothing": [],
    }
    paths = []
    for name, prompts in sets.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(prompts))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def finetuned_copy(tmp_path_factory, finetuned_model):
    return save_checkpoint(finetuned_model, tmp_path_factory.mktemp("ckpt") / "smat.pth")


def _alpha(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def _prompt_args(paths) -> list[str]:
    return [arg for path in paths for arg in ("--prompt", str(path))]


def test_each_prompt_file_gets_the_alpha_a_single_run_gives(run_cli, photo, prompt_files, tmp_path, finetuned_copy):
    out = tmp_path / "alphas"
    result = run_cli("matte", photo, *_prompt_args(prompt_files), "-o", out, "-c", finetuned_copy, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["embedded_once"] and summary["engine"]["backend"] == "torch"
    assert [row["mode"] for row in summary["prompt_sets"]] == ["interactive", "interactive", "automatic"]
    assert sorted(p.name for p in out.iterdir()) == ["box.png", "click.png", "nothing.png"]
    # 60x75 pads to 70x84: a 5x6 grid; the summary's memory is the embedding's.
    assert summary["embedding_mb"] == round(4 * (3456 * 5 * 6 + 384) / 1e6, 1)
    for path in prompt_files:
        single = tmp_path / f"single-{path.stem}.png"
        alone = run_cli("matte", photo, "--prompt", path, "-o", single, "-c", finetuned_copy)
        assert alone.code == 0, alone.stderr
        assert np.array_equal(_alpha(out / f"{path.stem}.png"), _alpha(single))  # decode(embed(x)) == forward(x)
    assert np.abs(_alpha(out / "click.png") - _alpha(out / "box.png")).max() > 0


def test_prompt_sets_reject_what_they_cannot_do(run_cli, photo, prompt_files, tmp_path):
    args = ["matte", photo, *_prompt_args(prompt_files[:2])]
    run_cli(*args, "--point", "3,3", "-o", tmp_path / "a").expect_error("put every prompt into the files")
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(prompt_files[0], twin / prompt_files[0].name)
    run_cli(
        "matte", photo, "--prompt", prompt_files[0], "--prompt", twin / prompt_files[0].name, "-o", tmp_path / "b"
    ).expect_error("prompt files must have different names")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.onnx").write_bytes(b"not used")
    run_cli(*args, "-o", tmp_path / "c", "--engine", lone / "model.onnx").expect_error(
        "lone has no smat_encoder.onnx or smat_encoder.plan: make the pair with smat-deploy export --interactive"
    )
    run_cli(*args, "-o", tmp_path / "d", "--engine", "x.plan").expect_error("no such folder or file: x.plan")
    run_cli(*args, "-o", tmp_path / "e", "--backend", "openvino").expect_error(  # the default engine is torch
        "is the PyTorch reference: it runs on backend torch, not openvino"
    )
    run_cli(*args, "-o", photo.parent).expect_error("must differ from the photo's folder")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


@pytest.mark.heavy
def test_prompt_sets_on_the_exported_pair_match_the_whole_onnx_model(run_cli, photo, prompt_files, tmp_path, exported):
    out = tmp_path / "pair"
    result = run_cli("matte", photo, *_prompt_args(prompt_files), "-o", out, "--engine", exported["dir"] / "smat.onnx")
    assert result.code == 0, result.stderr
    assert "embedded once" in result.stdout
    for path in prompt_files:
        whole = tmp_path / f"whole-{path.stem}.png"
        alone = run_cli("matte", photo, "--prompt", path, "-o", whole, "--engine", exported["dir"] / "smat.onnx")
        assert alone.code == 0, alone.stderr
        assert np.abs(_alpha(out / f"{path.stem}.png") - _alpha(whole)).max() <= 1  # 8-bit rounding of a 1e-4 match
