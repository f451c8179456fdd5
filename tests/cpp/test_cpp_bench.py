"""``smat-deploy cpp-bench`` on a tiny contract model: its report, and a failed run when C++ is too slow."""

from __future__ import annotations

import json

import pytest

from smat_deploy.cli import cpp_bench


@pytest.fixture
def tiny(tiny_onnx_factory, tmp_path):
    return tiny_onnx_factory(tmp_path / "tiny.onnx")


def test_the_report_has_both_sides_per_size_and_the_cold_starts(run_cli, cpp_build, tiny, monkeypatch):
    monkeypatch.setattr(cpp_bench, "PER_CALL_LIMIT", 1e9)  # tiny calls are microseconds: no verdict on noise
    result = run_cli(
        "cpp-bench",
        "--engine",
        tiny,
        "--sizes",
        "64x48,30",
        "--rounds",
        "3",
        "--cold",
        "1",
        "--json",
        "--library",
        cpp_build / "libsmat.so",
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    calls = report["per_call"]
    assert [c["size"] for c in calls] == ["64x48", "30x30"]
    for call in calls:
        assert call["cpp_ms"] > 0 and call["python_ms"] > 0 and call["max_abs_diff"] <= 1e-6
        assert call["cpp_over_python"] > 0
    cold = report["cold_start"]
    assert cold["cpp_s"] > 0 and cold["python_s"] > 0


def test_a_slow_cpp_call_fails_the_run(run_cli, cpp_build, tiny, monkeypatch):
    monkeypatch.setattr(cpp_bench, "PER_CALL_LIMIT", 1e-9)
    result = run_cli(
        "cpp-bench",
        "--engine",
        tiny,
        "--sizes",
        "32",
        "--rounds",
        "3",
        "--cold",
        "0",
        "--library",
        cpp_build / "libsmat.so",
    )
    assert result.code == 1
    assert "a C++ call is more than" in result.stderr and "slower than Python's at 32x32" in result.stderr


def test_bad_arguments(run_cli, tiny, tmp_path):
    run_cli("cpp-bench", "--engine", tmp_path / "none.onnx").expect_error("engine not found")
    run_cli("cpp-bench", "--engine", tiny, "--rounds", "1").expect_error("--rounds must be at least 3")
    run_cli("cpp-bench", "--engine", tiny, "--library", tmp_path / "libsmat.so").expect_error(
        "the C++ library is not built"
    )
