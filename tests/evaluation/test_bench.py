"""Benchmark building blocks: argument parsing, engine checks before anything runs, inputs, report text."""

from __future__ import annotations

import numpy as np
import pytest

from smat_deploy import SmatError
from smat_deploy.evaluation.bench.machine import matmul_rate
from smat_deploy.evaluation.bench.report import format_report
from smat_deploy.evaluation.bench.runner import BenchReport, Size, resolve_engine
from smat_deploy.evaluation.bench.worker import bench_inputs
from smat_deploy.runtime.tensorrt import unavailable_reason


def test_size_labels_are_width_by_height():  # size and batch parsing: tests/cli/test_shapes.py
    assert Size(1560, 1040).label == "1560x1040"


def test_engines_are_checked_before_anything_runs(tmp_path, tiny_onnx_factory, varying_model):
    torch_engine = resolve_engine("torch")
    parameters = sum(p.numel() * p.element_size() for p in varying_model.parameters())
    assert torch_engine.backend == "torch" and torch_engine.artifact_bytes == parameters
    tiny = resolve_engine(str(tiny_onnx_factory(tmp_path / "tiny.onnx")))
    assert tiny.backend == "onnxruntime" and tiny.unavailable is None and tiny.artifact_bytes > 0
    broken = tiny_onnx_factory(tmp_path / "broken.onnx", names=("image", "mask", "state", "alpha"))
    (tmp_path / "model.tflite").write_bytes(b"x")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    for engine, message in [
        (broken, "does not match the SMat contract (image, prompt, state -> alpha): missing input prompt"),
        (tmp_path / "model.tflite", "unknown engine type 'model.tflite'"),
        (tmp_path / "missing.onnx", "engine not found"),
        (tmp_path / "junk.onnx", "cannot read ONNX model"),
    ]:
        with pytest.raises(SmatError) as caught:
            resolve_engine(str(engine))
        assert message in str(caught.value)
    (tmp_path / "smat.plan").write_bytes(b"engine")
    plan = resolve_engine(str(tmp_path / "smat.plan"))
    assert plan.backend == "tensorrt" and plan.unavailable == unavailable_reason()


def test_inputs_are_deterministic_composites_with_clicks_on_even_samples():
    image, prompt, state = bench_inputs(60, 90, 3, seed=4)
    assert image.shape == (3, 3, 60, 90) and prompt.shape == (3, 1, 60, 90) and state.shape == (3, 1)
    assert image.dtype == prompt.dtype == state.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.05
    assert state[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert prompt[1].sum() == 0 and prompt[0].sum() > 0
    again = bench_inputs(60, 90, 3, seed=4)
    for one, other in zip((image, prompt, state), again, strict=True):
        np.testing.assert_array_equal(one, other)


def test_matmul_rate_is_two_n_cubed_over_the_best_time():
    rate = matmul_rate(128, repeats=2)
    assert rate.size == 128 and rate.repeats == 2 and rate.threads >= 1
    assert rate.gflops == pytest.approx(2 * 128**3 / rate.best_seconds / 1e9)


def test_report_text_names_every_column_and_moves_reasons_below_the_table():
    row = {
        "engine": "a.onnx", "backend": "onnxruntime", "status": "ok", "precision": "float32", "artifact_mb": 108.8,
        "size": "518x518", "batch": 1, "p50_ms": 1000.0, "p90_ms": 1100.0, "p99_ms": 1200.0, "iters": 5,
        "images_per_s": 1.0, "speedup_vs_first": 1.0, "gflops": 164.9, "matmul_gflops": 180.0,
        "of_matmul": 164.9 / 180, "peak_rss_mb": 1400.0, "base_rss_mb": 790.0, "loaded_rss_mb": 1000.0,
        "torch_cuda_peak_mb": None, "mad_vs_ref": 6e-7, "max_abs_vs_ref": 2e-5, "open_s": 1.8,
        "device": "cpu", "providers": ["CPUExecutionProvider"], "threads": None, "pid": 1,
    }  # fmt: skip
    failed = {**row, "engine": "b.plan", "status": "unavailable: TensorRT is not installed"}
    failed.update(dict.fromkeys(["precision", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "gflops", "of_matmul"]))
    report = BenchReport(
        machine={"cpu": "Test CPU", "logical_cpus": 2, "gpu": None, "matmul_size": 4096},
        reference="PyTorch reference, test weights",
        rows=[row, failed],
        overhead=[
            {
                "engine": "a.onnx",
                "size": "518x518",
                "batch": 1,
                "pairs": 5,
                "runtime_p50_ms": 1001.0,
                "session_run_p50_ms": 1000.0,
                "overhead": 0.001,
            }
        ],
        sweep=[],
        attention={
            "share_by_size": {"518x518": 0.21},
            "half_of_flops_from_side": 1008,
            "half_of_flops_from_tokens": 5184,
        },
    )
    text = format_report(report)
    for expected in ["p50 ms", "p90 ms", "p99 ms", "img/s", "speedup", "GFLOP/s", "of matmul", "peak MB", "MAD vs ref",
                     "92%", "6.0e-07", "+0.1%", "added ms", "b.plan: unavailable: TensorRT is not installed",
                     "21% at 518x518", "1008x1008 (5184 tokens)", "Test CPU, 2 logical CPUs", "ru_maxrss"]:  # fmt: skip
        assert expected in text, expected
    table_lines = [line for line in text.splitlines() if line.startswith("b.plan")]
    assert len(table_lines) == 1 and "unavailable " in table_lines[0] + " " and "TensorRT" not in table_lines[0]
