"""The C++ library's memory gate: the memory model of smat_deploy/runtime/memory.py and the default budget of
sizing.py, so a photo too large for this machine is refused in one line instead of crashing the process."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smat_deploy.cpp import CError, Engine, estimate_memory_mb
from smat_deploy.runtime.memory import PAIR_PROFILES, PROFILES, pair_estimate
from smat_deploy.runtime.sizing import SizePolicy, resolve_budget


@pytest.mark.parametrize("size", [(14, 14), (45, 30), (518, 518), (768, 1024), (3000, 4000), (6000, 8000)])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_estimates_are_pythons(libsmat, size, batch):
    height, width = size
    whole, pair = PROFILES["openvino"], PAIR_PROFILES["openvino"]
    for role, expected in (
        ("whole", whole.estimate(batch, height, width).total_mb),
        ("encoder", pair.estimate(batch, height, width, "encoder").total_mb),
        ("decoder", pair.estimate(batch, height, width, "decoder").total_mb),
        ("pair", pair_estimate(pair, batch, height, width).total_mb),
    ):
        assert estimate_memory_mb(libsmat, role, batch, height, width) == pytest.approx(expected, rel=1e-12), role


def test_a_camera_photo_is_refused_or_run_as_the_python_budget_says(libsmat, tiny_onnx_factory, tmp_path):
    """8192x8192 (the largest side) predicts about 70 GB on OpenVINO: refused on any machine whose budget is
    smaller, by the same rule as Python's (60% of the available memory plus the resident)."""
    engine = Engine(libsmat, tiny_onnx_factory(tmp_path / "tiny.onnx"))
    photo = np.zeros((8192, 8192, 3), np.uint8)
    needed = PROFILES["openvino"].estimate(1, 8192, 8192).total_mb
    budget = resolve_budget(SizePolicy())
    try:
        if needed > budget.call_mb:
            with pytest.raises(
                CError,
                match=r"a 8192x8192 photo needs about [\d,]+ MB on OpenVINO, above the memory "
                r"budget's [\d,]+ MB \(60% of the [\d,]+ MB available \+ [\d,]+ MB resident\)",
            ) as err:
                engine.matte(photo)
            assert err.value.status == 7
        else:  # a machine with room for it: the tiny model runs
            assert engine.matte(photo).shape == (8192, 8192)
    finally:
        engine.close()
    engine = Engine(libsmat, tiny_onnx_factory(tmp_path / "tiny.onnx"), max_memory_mb=-1)  # the check turned off
    try:
        assert engine.matte(np.zeros((600, 800, 3), np.uint8)).shape == (600, 800)
    finally:
        engine.close()


def test_smat_matte_takes_a_budget(smat_matte, tiny_onnx_factory, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(photo)
    model = tiny_onnx_factory(tmp_path / "tiny.onnx")
    run = [photo, "-e", model, "-o", tmp_path / "a.png"]
    refused = smat_matte(*run, "--max-memory-mb", "50")
    assert refused.returncode == 2 and not (tmp_path / "a.png").exists()
    # smat_matte has smat-deploy matte's size policy: too large at full size, and at the smallest size too
    smallest = PROFILES["openvino"].estimate(1, 14, 14).total_mb
    assert refused.stderr.startswith(
        f"error: a 400x300 photo needs at least {smallest + 300 * 400 * 20 / 1e6 + 150:,.0f}"
    )
    assert (
        refused.stderr.rstrip().endswith("MB a call may take (max_memory_mb 50); raise Options::max_memory_mb")
        and refused.stderr.count("\n") == 1
    )
    bad = smat_matte(*run, "--max-memory-mb", "-3")
    assert bad.returncode == 2 and "--max-memory-mb must be a number above 0" in bad.stderr
    ok = smat_matte(*run, "--max-memory-mb", "100000")
    assert ok.returncode == 0, ok.stderr
