"""Shared fixtures: models with varying output, CLI runner, the shared photo folder, one real export,
and tiny hand-built ONNX models with the SMat contract (``max(mean RGB, prompt * state)``) for fast runtime tests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from smat_deploy import model as smat_model
from smat_deploy.model import load_model
from smat_deploy.train.demo_weights import demo_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "matting"


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="session")
def varying_model():
    """The built-in default model: seeded, BatchNorm statistics recalibrated (alpha std ~0.1)."""
    return load_model(seed=0)


@pytest.fixture(scope="session")
def finetuned_checkpoint(request) -> Path:
    """An official-format checkpoint after a brief fine-tune on synthetic composites: weights whose alpha varies.

    The very weights ``smat-deploy demo`` uses without ``--checkpoint``: the recipe
    :data:`smat_deploy.train.demo_weights.DEMO_FINETUNE` (only the prompt attention and decoder learn),
    built once (about 40 s on two quiet cores) and cached in pytest's cache folder between runs, keyed by
    :func:`smat_deploy.train.demo_weights.weights_key`. Its alpha on held-out composites has a standard
    deviation well above 0.05 (checked in ``tests/train/test_finetuned_fixture.py``), so parity and
    precision checks on it compare real mattes, not a constant.
    """
    folder = Path(request.config.cache.mkdir("smat-finetuned"))
    return demo_checkpoint(folder, prefix="finetuned")


@pytest.fixture(scope="session")
def finetuned_model(finetuned_checkpoint):
    """The model in ``finetuned_checkpoint``, in eval mode (shared: do not modify it)."""
    return load_model(finetuned_checkpoint)


@pytest.fixture(scope="session")
def shared_photos() -> Path:
    if not SHARED_PHOTOS.is_dir():
        pytest.skip("../shared/data/matting is not present on this machine")
    return SHARED_PHOTOS


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def expect_error(self, message: str) -> None:
        """A failed run whose whole stderr is one ``error:`` line containing ``message``, with no traceback."""
        assert self.code != 0
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), self.stderr
        assert message in lines[0]
        assert "Traceback" not in self.stderr + self.stdout


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the real ``smat-deploy`` entry point in-process and capture its exit code and output."""
    from smat_deploy.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["smat-deploy", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


# -- ONNX models ------------------------------------------------------------------------------------
def make_tiny_onnx(
    path: Path,
    *,
    size: tuple[int, int] | None = None,
    batch: int | None = None,
    names: tuple[str, str, str, str] = ("image", "prompt", "state", "alpha"),
    image_type: int = TensorProto.FLOAT,
    state_rank: int = 2,
    extra_output: bool = False,
    precision: str | None = None,
) -> Path:
    """Write a tiny contract model to ``path``; ``size``/``batch`` fix those dimensions, the rest break the contract."""
    image, prompt, state, alpha = names
    b = batch if batch is not None else "batch"
    h, w = size if size is not None else ("height", "width")
    state_shape = [b, 1] if state_rank == 2 else [b]
    nodes = [
        helper.make_node("Cast", [image], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["image_f", "channel_axis"], ["grey"], keepdims=1),
        helper.make_node("Reshape", [state, "state_shape"], ["state_4d"]),
        helper.make_node("Mul", [prompt, "state_4d"], ["marked"]),
        helper.make_node("Max", ["grey", "marked"], [alpha]),
    ]
    outputs = [helper.make_tensor_value_info(alpha, TensorProto.FLOAT, [b, 1, h, w])]
    if extra_output:
        nodes.append(helper.make_node("Identity", ["grey"], ["grey_out"]))
        outputs.append(helper.make_tensor_value_info("grey_out", TensorProto.FLOAT, [b, 1, h, w]))
    graph = helper.make_graph(
        nodes,
        "tiny_smat",
        [
            helper.make_tensor_value_info(image, image_type, [b, 3, h, w]),
            helper.make_tensor_value_info(prompt, TensorProto.FLOAT, [b, 1, h, w]),
            helper.make_tensor_value_info(state, TensorProto.FLOAT, state_shape),
        ],
        outputs,
        initializer=[
            helper.make_tensor("channel_axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("state_shape", TensorProto.INT64, [4], [-1, 1, 1, 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    if precision is not None:
        path.with_suffix(".json").write_text(json.dumps({"precision": precision}))
    return path


def tiny_expected(image: np.ndarray, prompt: np.ndarray, state: np.ndarray) -> np.ndarray:
    """What the tiny model returns for contract inputs, computed with numpy."""
    return np.maximum(image.mean(axis=1, keepdims=True), prompt * state[:, :, None, None]).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_onnx_factory():
    """:func:`make_tiny_onnx`: a tiny contract model (``max(mean RGB, prompt * state)``) or a broken variant."""
    return make_tiny_onnx


@pytest.fixture(scope="session")
def tiny_expected_alpha():
    """:func:`tiny_expected`: the tiny model's output computed with numpy."""
    return tiny_expected


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx", precision="float32")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, finetuned_checkpoint) -> dict:
    """``smat-deploy export -c <fine-tuned checkpoint> --interactive --save-golden``; returns its JSON summary
    plus ``dir`` and ``checkpoint``. The folder holds ``smat.onnx`` and the interactive pair
    (``smat_encoder.onnx``, ``smat_decoder.onnx``), all with manifests; golden data for all three.

    One real export per test session, through the real command line, shared by the export,
    precision, runtime, bench, parity and demo tests. It exports the ``finetuned_checkpoint`` weights,
    so every comparison against it compares mattes with real structure; the PyTorch reference of
    those tests is ``finetuned_model`` (or ``-c`` with the same checkpoint on the command line).
    """
    out = tmp_path_factory.mktemp("export")
    command = [
        sys.executable,
        "-m",
        "smat_deploy",
        "export",
        "--checkpoint",
        str(finetuned_checkpoint),
        "--output",
        str(out),
        "--interactive",
        "--save-golden",
        str(out / "golden"),
    ]
    result = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    summary["dir"] = Path(out)
    summary["checkpoint"] = Path(finetuned_checkpoint)
    return summary


# -- parity ----------------------------------------------------------------------------------------
@pytest.fixture
def fast_reference(monkeypatch, varying_model):
    """The built-in default weights (seed 0) without recomputing them in every in-process CLI run."""
    real = smat_model.load_model

    def load(checkpoint=None, *, seed=0):
        return varying_model if checkpoint is None and seed == 0 else real(checkpoint, seed=seed)

    monkeypatch.setattr(smat_model, "load_model", load)  # the torch backend imports it when it opens


@pytest.fixture
def parity_photos(tmp_path):
    """Two small photos, one with a ground-truth alpha (box-shaped foreground), one without."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name, size in (("cat.png", (42, 56)), ("dog.png", (56, 42))):
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(folder / name)
    alpha = np.zeros((42, 56), np.uint8)
    alpha[8:30, 12:44] = 255
    alpha[30:34, 12:44] = 100  # soft rows, below 0.5: not part of the derived box
    Image.fromarray(alpha).save(folder / "cat_alpha.png")
    return folder
