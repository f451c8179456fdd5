"""The memory model: its arithmetic on the contract, and its predictions against peaks measured in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smat_deploy.runtime import Predictor
from smat_deploy.runtime.memory import CONSERVATIVE, PAIR_PROFILES, PROFILES, CallShape, embedding_bytes, pair_estimate

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_tokens_and_score_tensors_follow_the_padding_rule():
    assert CallShape(1, 518, 518).tokens == 37 * 37
    assert CallShape(1, 518, 519).tokens == 38 * 38  # the quirk: both sides grow
    # ONNX Runtime's own figure for a 4000x3000 photo on smat.onnx: "Failed to allocate memory for requested
    # buffer of size 90747433984" (one MatMul's scores, 6 heads, 61,491 tokens with the class token, aligned).
    assert abs(CallShape(1, 3000, 4000).score_bytes - 90_747_433_984) < 64
    assert CallShape(2, 448, 448).channel_bytes == 512 * 512 * 4


def test_estimates_grow_with_batch_and_size_and_fused_attention_drops_the_quadratic_term():
    for profile in (*PROFILES.values(), CONSERVATIVE):
        one, two = profile.estimate(1, 896, 896), profile.estimate(2, 896, 896)
        assert two.total_mb - profile.fixed_mb == pytest.approx(2 * (one.total_mb - profile.fixed_mb))
        assert profile.estimate(1, 1344, 1344).total_mb > one.total_mb
    assert PROFILES["onnxruntime"].estimate(1, 3000, 4000).attention_mb > 180_000  # both score tensors, 90.7 GB each
    assert PROFILES["onnxruntime-fused"].estimate(1, 3000, 4000).attention_mb == 0
    pair = pair_estimate(PAIR_PROFILES["onnxruntime"], 1, 1000, 750)
    assert pair.total_mb >= PAIR_PROFILES["onnxruntime"].estimate(1, 1000, 750, "encoder").total_mb


@pytest.mark.parametrize("size", [(45, 59), (518, 518), (300, 700)])
def test_the_embeddings_size_is_what_the_exported_encoder_writes(exported, size):
    height, width = size
    predictor = Predictor.open(exported["dir"], device="cpu")
    embedding = predictor.embed(np.zeros((height, width, 3), np.float32))
    assert embedding.nbytes == embedding_bytes(1, height, width)


def _measure(job: dict) -> dict:
    result = subprocess.run(
        [sys.executable, str(HERE / "measure_memory.py"), json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _linux_peaks() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pytest.skip("measuring a call's peak needs Linux's /proc/self/clear_refs")


@pytest.mark.parametrize(
    "backend, file, size",
    [
        ("onnxruntime", "smat.onnx", (672, 896)),
        ("openvino", "smat.onnx", (896, 896)),
        ("torch", None, (672, 896)),
    ],
)
def test_predictions_are_within_20_percent_of_the_measured_peak(exported, backend, file, size):
    """Sizes whose calls need more than 500 MB (below that the fixed part dominates and the model errs high)."""
    _linux_peaks()
    height, width = size
    engine = str(exported["checkpoint"] if file is None else exported["dir"] / file)
    measured = _measure({"kind": "whole", "engine": engine, "backend": backend, "batch": 1, "height": height,
                         "width": width})  # fmt: skip
    print(
        f"\n{backend} {width}x{height}: predicted {measured['predicted_mb']:.0f} MB, measured {measured['work_mb']:.0f}"
    )
    assert measured["work_mb"] > 500
    assert measured["predicted_mb"] == pytest.approx(measured["work_mb"], rel=0.2)


@pytest.mark.parametrize(("backend", "side"), [("onnxruntime", 896), ("openvino", 1120)])
def test_the_pairs_predictions_are_within_20_percent_of_the_measured_embed_and_click(exported, backend, side):
    _linux_peaks()
    if backend == "openvino":
        pytest.importorskip("openvino")
    job = {
        "kind": "pair",
        "engine": str(exported["dir"]),
        "backend": backend,
        "batch": 1,
        "height": side,
        "width": side,
    }
    measured = _measure(job)
    print(f"\npair on {backend} {side}x{side}: {measured}")
    assert measured["embed_mb"] > 500 and measured["click_mb"] > 500
    assert measured["predicted_embed_mb"] == pytest.approx(measured["embed_mb"], rel=0.2)
    assert measured["predicted_click_mb"] == pytest.approx(measured["click_mb"], rel=0.2)
