"""Shared fixtures: models with varying output, CLI runner, and the shared photo folder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from smat_deploy.model import load_model

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "matting"


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="session")
def varying_model():
    """The built-in default model: seeded, BatchNorm statistics recalibrated (alpha std ~0.1)."""
    return load_model(seed=0)


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


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict:
    """``smat-deploy export --save-golden`` on the built-in default weights; returns its JSON summary."""
    out = tmp_path_factory.mktemp("export")
    command = [
        sys.executable,
        "-m",
        "smat_deploy",
        "export",
        "--output-dir",
        str(out),
        "--save-golden",
        str(out / "golden"),
    ]
    result = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    summary["dir"] = Path(out)
    return summary
