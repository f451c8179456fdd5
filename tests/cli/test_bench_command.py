"""``smat-deploy bench`` end to end: real worker processes on tiny models, bad requests, exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import onnx
import pytest

from smat_deploy.evaluation.flops import smat_flops
from smat_deploy.model import save_checkpoint
from smat_deploy.runtime.tensorrt import unavailable_reason


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_onnx_factory, varying_model):
    """One real run through the command line: a tiny model, one ONNX Runtime cannot load, a TensorRT file."""
    folder = tmp_path_factory.mktemp("bench")
    tiny = tiny_onnx_factory(folder / "tiny.onnx", precision="float32")
    broken = onnx.load(str(tiny))
    broken.graph.node[-1].op_type = "NoSuchOperator"  # I/O still meets the contract; loading fails
    onnx.save(broken, str(folder / "unloadable.onnx"))
    (folder / "smat.plan").write_bytes(b"not really an engine")
    checkpoint = save_checkpoint(varying_model, folder / "smat.pth")
    args = [
        "--engine", tiny, "--engine", folder / "unloadable.onnx",
        "--engine", folder / "smat.plan", "--sizes", "42x28,56x56", "--warmup", "1", "--iters", "2",
        "--matmul-size", "128", "-c", checkpoint, "--plot", folder / "sweep.png", "--json",
    ]  # fmt: skip
    command = [sys.executable, "-m", "smat_deploy", "bench", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    return {"code": result.returncode, "report": json.loads(result.stdout), "stderr": result.stderr, "folder": folder}


def test_each_engine_size_and_batch_runs_in_its_own_process(bench_run):
    report = bench_run["report"]
    rows = {(row["engine"].rsplit("/", 1)[-1], row["size"]): row for row in report["rows"]}
    assert set(rows) == {(e, s) for e in ("tiny.onnx", "unloadable.onnx", "smat.plan") for s in ("42x28", "56x56")}
    measured = [row for row in report["rows"] if row["status"] == "ok"]
    assert len(measured) == 2 and all(row["iters"] == 2 for row in measured)
    pids = [row["pid"] for row in report["rows"] if row["pid"] is not None]
    assert len(set(pids)) == len(pids) == 3 and os.getpid() not in pids  # unloadable.onnx is not retried
    for row in measured:
        height, width = (int(v) for v in row["size"].split("x")[::-1])
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["images_per_s"] == pytest.approx(1000 / row["p50_ms"])
        assert row["gflops"] == pytest.approx(smat_flops(height, width).total / (row["p50_ms"] / 1e3) / 1e9)
        assert row["of_matmul"] == pytest.approx(row["gflops"] / row["matmul_gflops"])
        assert row["peak_rss_mb"] >= row["base_rss_mb"] > 50
        assert row["precision"] == "float32" and row["providers"] == ["CPUExecutionProvider"]
        # the tiny model is not SMat: it differs from the reference, and that difference is measured
        assert 0.01 < row["mad_vs_ref"] <= row["max_abs_vs_ref"] <= 1
    assert rows[("tiny.onnx", "56x56")]["speedup_vs_first"] == 1.0


def test_failures_are_rows_and_the_exit_status_says_so(bench_run):
    report = bench_run["report"]
    by_engine = {row["engine"].rsplit("/", 1)[-1]: row["status"] for row in report["rows"]}
    assert by_engine["unloadable.onnx"].startswith("error: ONNX Runtime cannot load")
    assert [row["status"] for row in report["rows"] if "unloadable" in row["engine"]] == [
        by_engine["unloadable.onnx"]
    ] * 2
    reason = unavailable_reason()
    if reason is not None:
        assert by_engine["smat.plan"] == f"unavailable: {reason}"
    assert bench_run["code"] == 1
    assert "error: 2 run(s) failed" in bench_run["stderr"] and "unloadable.onnx" in bench_run["stderr"]


def test_overhead_sweep_and_plot(bench_run):
    report = bench_run["report"]
    overhead = report["overhead"]
    assert [(row["engine"].rsplit("/", 1)[-1], row["size"]) for row in overhead] == [("tiny.onnx", "42x28")]
    (row,) = overhead
    assert row["pairs"] == 2 and row["overhead"] == pytest.approx(row["runtime_p50_ms"] / row["session_run_p50_ms"] - 1)
    assert row["overhead_of_minimums"] > -1 and 0 < row["wrapper_work_ms"] < row["runtime_p50_ms"]
    sweep = [row for row in report["sweep"] if row["engine"].endswith("tiny.onnx")]
    assert [row["size"] for row in sweep] == ["42x28", "56x56"]
    assert sweep[0]["time_growth"] == 1.0 and sweep[0]["memory_growth"] == 1.0
    assert sweep[1]["gflop_per_image"] == pytest.approx(smat_flops(56, 56).total / 1e9)
    assert {row["engine"].rsplit("/", 1)[-1] for row in report["sweep"]} == {"tiny.onnx"}
    assert report["attention"]["half_of_flops_from_side"] == 1008
    assert "ru_maxrss" in report["memory_method"]
    assert report["plot"] == str(bench_run["folder"] / "sweep.png")
    assert (bench_run["folder"] / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sizes", "518x"), "--sizes must be WIDTHxHEIGHT"),
        (("--sizes", "10x518"), "at least 14 pixels"),
        (("--batch", "0"), "--batch values must be at least 1"),
        (("--iters", "0"), "--iters must be at least 1"),
        (("--engine", "model.tflite"), "unknown engine type 'model.tflite'"),
        (("--engine", "missing.onnx"), "engine not found: missing.onnx"),
        (("--sizes", "28x28,42x42", "--plot", "nowhere/plot.png"), "output folder does not exist"),
    ],
)
def test_bad_requests_fail_in_one_line_before_anything_runs(run_cli, tiny_onnx, args, message):
    run_cli("bench", "--engine", tiny_onnx, *args).expect_error(message)


def test_an_engine_that_breaks_the_contract_fails_before_anything_runs(run_cli, tmp_path, tiny_onnx_factory):
    wrong = tiny_onnx_factory(tmp_path / "wrong.onnx", names=("image", "prompt", "mode", "alpha"))
    run_cli("bench", "--engine", "torch", "--engine", wrong).expect_error("missing input state; unexpected input mode")


@pytest.mark.heavy
def test_exported_model_against_the_reference_side_by_side(run_cli, exported):
    onnx_path = exported["dir"] / "smat.onnx"
    args = ["--engine", "torch", "--engine", onnx_path, "--sizes", "70x56", "--warmup", "0", "--iters", "1"]
    args += ["--checkpoint", exported["checkpoint"]]
    result = run_cli("bench", *args, "--matmul-size", "256", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    torch_row, onnx_row = report["rows"]
    assert torch_row["engine"] == "torch" and torch_row["mad_vs_ref"] == 0 and torch_row["speedup_vs_first"] == 1
    assert onnx_row["status"] == "ok" and onnx_row["precision"] == "float32"
    assert onnx_row["max_abs_vs_ref"] <= 1e-4 and onnx_row["mad_vs_ref"] <= 1e-5
    assert onnx_row["speedup_vs_first"] == pytest.approx(torch_row["p50_ms"] / onnx_row["p50_ms"])
    assert onnx_row["artifact_mb"] == pytest.approx(onnx_path.stat().st_size / 1e6)
    assert [row["engine"] for row in report["overhead"]] == [str(onnx_path)]
    assert str(exported["checkpoint"]) in report["reference"]


@pytest.mark.heavy
def test_sizes_run_by_the_size_policy_with_predicted_and_measured_peaks(run_cli, exported):
    """A size that fits runs at full size; one above --max-side runs scaled and upsampled; every row predicts
    its process's peak memory before the first call and measures it (within 20 % at these sizes)."""
    onnx_path = exported["dir"] / "smat.onnx"
    args = ["--engine", "torch", "--engine", onnx_path, "--checkpoint", exported["checkpoint"]]
    args += ["--sizes", "896x672,1400x1050", "--max-side", "1000", "--warmup", "0", "--iters", "2"]
    result = run_cli("bench", *args, "--matmul-size", "256", "--no-plot", "--json")
    assert result.code == 0, result.stderr
    rows = {(row["engine"].rsplit("/", 1)[-1], row["size"]): row for row in json.loads(result.stdout)["rows"]}
    full, scaled = rows[("smat.onnx", "896x672")], rows[("smat.onnx", "1400x1050")]
    assert full["run_size"] == "896x672" and not full["scaled"] and full["resize_share"] is None
    assert scaled["run_size"] == "1000x750" and scaled["scaled"] and 0 < scaled["resize_share"] < 0.5
    for row in rows.values():
        assert row["predicted_mb"] == pytest.approx(row["peak_rss_mb"], rel=0.2), row
    # The reference ran at the same sizes under the same policy: the ONNX model is compared with it at both.
    assert full["max_abs_vs_ref"] <= 1e-4 and scaled["max_abs_vs_ref"] <= 1e-3
    text = run_cli("bench", *args, "--matmul-size", "256", "--no-plot")
    assert text.code == 0 and "ran at" in text.stdout and "1000x750" in text.stdout and "pred MB" in text.stdout
