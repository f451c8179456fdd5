"""The runtime where PyTorch is not installed: ONNX engines run, and the torch engine says what is missing.

A subprocess hides torch, timm and torchvision behind a meta-path finder (importing them fails as
if they were not installed), then uses ``smat_deploy.Runtime`` as a deployment without PyTorch
would. (``smat-deploy matte`` without torch is covered in tests/cli.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smat_deploy import prompts as P

SCRIPT = r"""
import importlib.abc
import json
import sys

BLOCKED = ("torch", "timm", "torchvision")


class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Uninstalled())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker let torch through")

import numpy as np

import smat_deploy
from smat_deploy import Runtime, SmatError

engine, photo_path, out = sys.argv[1:4]
photo = np.load(photo_path)
report = {"version": smat_deploy.__version__}
for backend in ("onnxruntime", "openvino"):
    runtime = Runtime.open(engine, backend=backend)
    alpha = runtime(photo, [{"type": "point", "x": 20, "y": 10, "radius": 3}])
    np.save(f"{out}/{backend}.npy", alpha)
    report[backend] = {
        "backend": runtime.info.backend,
        "device": runtime.info.device,
        "type": type(alpha).__name__,
        "shape": list(alpha.shape),
        "dtype": str(alpha.dtype),
        "min": float(alpha.min()),
        "max": float(alpha.max()),
    }
try:
    Runtime.open("torch")
except SmatError as err:
    report["torch_engine_error"] = str(err)
report["torch_in_sys_modules"] = "torch" in sys.modules
report["blocked_loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory, tiny_onnx_factory) -> dict:
    """Run :data:`SCRIPT` once: its JSON report, the photo it was given and the folder of its alphas."""
    folder = tmp_path_factory.mktemp("without_torch")
    engine = tiny_onnx_factory(folder / "tiny.onnx", precision="float32")
    photo = (np.random.default_rng(4).random((40, 50, 3)) * 255).astype(np.uint8)
    np.save(folder / "photo.npy", photo)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(engine), str(folder / "photo.npy"), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return {"report": json.loads(result.stdout.strip().splitlines()[-1]), "photo": photo, "folder": Path(folder)}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_engines_run_a_photo_with_a_point_prompt_without_torch(without_torch, backend, tiny_expected_alpha):
    photo = without_torch["photo"]
    mask = P.rasterize([P.Point(20, 10, radius=3)], (40, 50))[None, None]
    image = (photo.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
    expected = tiny_expected_alpha(image, mask, np.ones((1, 1), np.float32))[0, 0]
    assert expected.min() < 0.99 < expected.max(), "the point marks part of the photo, not all of it"
    report = without_torch["report"][backend]
    assert report["backend"] == backend and report["device"] == "cpu"
    assert report["type"] == "ndarray" and report["shape"] == [40, 50] and report["dtype"] == "float32"
    assert report["min"] == pytest.approx(float(expected.min()), abs=1e-6)
    assert report["max"] == pytest.approx(float(expected.max()), abs=1e-6)
    np.testing.assert_allclose(np.load(without_torch["folder"] / f"{backend}.npy"), expected, atol=1e-6)


def test_nothing_loads_torch_and_the_torch_engine_says_it_is_not_installed(without_torch):
    report = without_torch["report"]
    assert report["torch_in_sys_modules"] is False and report["blocked_loaded"] == []
    message = report.get("torch_engine_error")
    assert message is not None, "opening the torch engine without torch must be a SmatError"
    assert "\n" not in message and "torch" in message and "not installed" in message and "pip install" in message


PREDICTOR_SCRIPT = (
    SCRIPT.split("engine, photo_path, out = sys.argv[1:4]")[0]
    + r"""
from smat_deploy import Predictor

folder, photo_path, out = sys.argv[1:4]
photo = np.load(photo_path)
predictor = Predictor.open(folder, device="cpu")
embedding = predictor.embed(photo)
for index, click in enumerate(([{"type": "point", "x": 20, "y": 10, "radius": 3}], None)):
    np.save(f"{out}/click{index}.npy", predictor.predict(embedding, click))
print(json.dumps({"torch_in_sys_modules": "torch" in sys.modules, "backend": predictor.backend}))
"""
)


@pytest.mark.heavy
def test_the_interactive_pair_runs_without_torch(exported, tmp_path):
    from smat_deploy import Runtime

    photo = (np.random.default_rng(9).random((40, 50, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "photo.npy", photo)
    result = subprocess.run(
        [sys.executable, "-c", PREDICTOR_SCRIPT, str(exported["dir"]), str(tmp_path / "photo.npy"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"torch_in_sys_modules": False, "backend": "onnxruntime"}
    whole = Runtime.open(exported["dir"] / "smat.onnx", device="cpu")
    for index, click in enumerate(([{"type": "point", "x": 20, "y": 10, "radius": 3}], None)):
        assert np.abs(np.load(tmp_path / f"click{index}.npy") - whole(photo, click)).max() <= 1e-4
