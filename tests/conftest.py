"""Shared fixtures: models with varying output, CLI runner, and the shared photo folder."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from smat_deploy import __version__
from smat_deploy.data.synthetic import SyntheticComposites, make_composite
from smat_deploy.model import load_model
from smat_deploy.model.batchnorm import recalibrate_batchnorm
from smat_deploy.train import FinetuneConfig, finetune

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "matting"


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="session")
def varying_model():
    """Seeded SMat with BatchNorm statistics recalibrated on synthetic composites (alpha std ~0.1)."""
    model = load_model(seed=0)
    batches = []
    for seed in range(4):
        sample = make_composite((224, 224), seed=seed)
        batches.append((to_tensor(sample.image), torch.zeros(1, 1, 224, 224)))
    return recalibrate_batchnorm(model, batches)


#: The brief fine-tune behind ``finetuned_checkpoint``: ~40 s on two quiet cores. Only the prompt
#: attention and decoder learn (a random backbone gains nothing in 40 steps), which halves the cost.
FINETUNE_FIXTURE = FinetuneConfig(steps=40, batch_size=4, size=112, lr=2e-3, freeze_backbone=True, seed=0)
FINETUNE_FIXTURE_COMPOSITES = 32


def _finetune_fixture_key() -> str:
    """Changes whenever the fixture's settings, the package version or the code that trains could change the result."""
    digest = hashlib.sha256(repr((FINETUNE_FIXTURE.to_dict(), FINETUNE_FIXTURE_COMPOSITES, __version__)).encode())
    for path in sorted(p for part in ("model", "data", "train") for p in (REPO / "smat_deploy" / part).glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def finetuned_checkpoint(request) -> Path:
    """An official-format checkpoint after a brief fine-tune on synthetic composites: weights whose alpha varies.

    Built once (about 40 s) and cached in pytest's cache folder between runs, keyed by
    :func:`_finetune_fixture_key`. Its alpha on held-out composites has a standard deviation well above
    0.05 (checked in ``tests/train/test_finetuned_fixture.py``), so parity and precision checks on it
    compare real mattes, not a constant.
    """
    folder = Path(request.config.cache.mkdir("smat-finetuned"))
    path = folder / f"finetuned-{_finetune_fixture_key()}.pth"
    if not path.is_file():
        for stale in folder.glob("finetuned-*.pth"):
            stale.unlink()
        model = load_model(seed=FINETUNE_FIXTURE.seed)
        data = SyntheticComposites(FINETUNE_FIXTURE_COMPOSITES, FINETUNE_FIXTURE.size)
        finetune(model, data, FINETUNE_FIXTURE, path)
    return path


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
