"""Bad input to ``smat-deploy export``: one line, non-zero exit, nothing replaced or left behind."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from smat_deploy.export import pipeline


def _single_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.code != 0 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_opset_checkpoint_and_folder_errors(run_cli, tmp_path):
    torch.save({"model": {"decoder.nope": torch.zeros(1)}}, tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_bytes(b"garbage")
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["--opset", "16"], "opset 16 is too old"),
        (["-c", tmp_path / "garbage.pth"], "not a readable PyTorch checkpoint"),
        (["-c", tmp_path / "wrong.pth"], "does not match SMat"),
        (["-c", tmp_path / "missing.pth"], "checkpoint not found"),
        (["--output", tmp_path / "a_file"], "output folder is a file"),
        (["--output", tmp_path / "a_file" / "sub"], "cannot create output folder"),
    ]
    for args, message in cases:
        assert message in _single_error_line(run_cli("export", "--output", tmp_path / "out", *args))
    assert not (tmp_path / "out" / "smat.onnx").exists()


def test_a_crash_mid_export_keeps_the_previous_model(run_cli, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "smat.onnx").write_bytes(b"previous model")
    (out / "smat.json").write_text("{}")

    def crash(model, path, opset):
        path.write_bytes(b"half a model")
        raise RuntimeError("killed")

    monkeypatch.setattr(pipeline, "export_onnx", crash)
    line = _single_error_line(run_cli("export", "--output", out))
    assert "RuntimeError" in line
    assert (out / "smat.onnx").read_bytes() == b"previous model"
    assert (out / "smat.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == ["smat.json", "smat.onnx"]


def test_bad_calibration_folders_fail_before_the_export(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    line = _single_error_line(run_cli("export", "--int8", "--calib", tmp_path / "empty", "--output", tmp_path / "out"))
    assert "holds no calibration set" in line
    line = _single_error_line(run_cli("export", "--fp16", "--calib", tmp_path / "nope", "--output", tmp_path / "out"))
    assert "calibration folder not found" in line
    line = _single_error_line(run_cli("export", "--cpu", "--calib", tmp_path / "nope", "--output", tmp_path / "out"))
    assert "calibration folder not found" in line
    assert not (tmp_path / "out" / "smat.onnx").exists()


@pytest.mark.heavy
def test_a_terminated_export_keeps_the_old_files_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "smat.onnx").write_bytes(b"the previous model")
    command = [sys.executable, "-m", "smat_deploy", "export", "--output", str(out), "--no-check"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".smat.onnx.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, "the export ended before its temporary file appeared"
        process.send_signal(signal.SIGTERM)  # what a CI timeout or `kill` sends
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and stderr.strip().endswith("error: interrupted"), stderr
    assert (out / "smat.onnx").read_bytes() == b"the previous model"
    assert sorted(p.name for p in out.iterdir()) == ["smat.onnx"]


def test_bad_int8_budgets_fail_before_any_work(run_cli, tmp_path):
    out = tmp_path / "out"
    cases = [
        (["--max-mean-diff", "0"], "mean |diff| must be a positive number, got 0.0"),
        (["--max-mean-diff", "-1e-3"], "mean |diff| must be a positive number"),
        (["--max-diff", "nan"], "max |diff| must be a positive number, got nan"),
        (["--max-diff", "inf"], "max |diff| must be a positive number, got inf"),
        (["--min-int8-share", "1.5"], "least int8 share must lie in [0, 1], got 1.5"),
        (["--holdout-photos", tmp_path / "missing"], "--holdout-photos: no such folder"),
    ]
    for args, message in cases:
        result = run_cli("export", "--int8", "--output", out, *args)
        assert result.code == 2
        assert message in _single_error_line(result)
    assert not out.exists()


def test_an_int8_file_over_its_budget_is_exit_1_with_one_line(run_cli, tmp_path, monkeypatch):
    """A failed gate is "a check failed" (exit 1), not bad input (exit 2); the message is the gate's own line."""
    from types import SimpleNamespace

    from smat_deploy.apps import export_job
    from smat_deploy.data.calibration import build_calibration_set
    from smat_deploy.errors import CheckFailed

    calib = build_calibration_set(tmp_path / "calib", synthetic=1, size=28, builtin_photos=False).directory
    monkeypatch.setattr(export_job, "export_float32", lambda **kwargs: SimpleNamespace(onnx_path=tmp_path / "x"))

    def over_budget(kind, *args, **kwargs):
        raise CheckFailed(f"smat_{kind}.onnx misses its budget: max |diff| 0.064 > 0.05 (1.3x); nothing was written")

    monkeypatch.setattr(export_job, "make_variant", over_budget)
    result = run_cli("export", "--int8", "--calib", calib, "--output", tmp_path / "out")
    assert result.code == 1
    assert _single_error_line(result) == (
        "error: smat_int8.onnx misses its budget: max |diff| 0.064 > 0.05 (1.3x); nothing was written"
    )
