"""``smat-deploy app``: its options' bad values, an engine it cannot open and a port in use are one line each."""

from __future__ import annotations

import socket

import pytest
from tiny_pair import make_tiny_pair


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--engine", "nowhere/"),
            "engine not found: nowhere/ (make the default with: smat-deploy export --interactive",
        ),
        (("--max-side", "5"), "--max-side must be 0 or at least 14, got 5"),
        (("--port", "70000"), "--port must be between 0 and 65535, got 70000"),
        (("--max-upload-mb", "0"), "--max-upload-mb and --max-megapixels must be positive"),
        (("--session-count", "0"), "--session-count and --session-memory must be at least 1"),
    ],
)
def test_bad_options_are_one_line(run_cli, args, message):
    result = run_cli("app", *args)
    assert result.code == 2
    result.expect_error(message)


def test_a_folder_without_the_pair_says_how_to_make_it(run_cli, tmp_path, tiny_onnx):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "smat.onnx").write_bytes(tiny_onnx.read_bytes())
    result = run_cli("app", "--engine", folder)
    assert result.code == 2
    result.expect_error("make the pair with smat-deploy export --interactive")


def test_a_port_in_use_is_one_line(run_cli, tmp_path):
    make_tiny_pair(tmp_path / "pair")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("app", "--engine", tmp_path / "pair", "--port", port)
    assert result.code == 2
    result.expect_error(f"cannot listen on 127.0.0.1:{port}")


def test_a_checkpoint_with_an_exported_engine_is_one_line(run_cli, tmp_path):
    """``-c`` belongs to the torch engine: with an export folder it is refused, not silently ignored."""
    make_tiny_pair(tmp_path / "pair")
    result = run_cli("app", "--engine", tmp_path / "pair", "-c", tmp_path / "smat.pth")
    assert result.code == 2
    result.expect_error(f"--checkpoint is for the torch engine; {tmp_path / 'pair'} carries its own weights")


def test_the_replay_line_runs_the_whole_model_on_the_pages_backend(tmp_path, tiny_onnx):
    """The page's replay line names the whole model beside the pair, and the backend when it is not the file's
    default: a page on OpenVINO replays on OpenVINO."""
    import shutil

    from smat_deploy import Predictor
    from smat_deploy.cli.webapp import _replay_engine

    pytest.importorskip("openvino")
    make_tiny_pair(tmp_path)
    shutil.copyfile(tiny_onnx, tmp_path / "smat.onnx")
    on_ort = Predictor.open(tmp_path, device="cpu")
    on_openvino = Predictor.open(tmp_path, backend="openvino", device="cpu")
    whole = tmp_path / "smat.onnx"
    assert _replay_engine(str(tmp_path), None, 0, on_ort) == f"--engine {whole}"
    assert _replay_engine(str(tmp_path), None, 0, on_openvino) == f"--engine {whole} --backend openvino"
