"""``--backend`` and ``--backend-option`` on the commands that open engines, and ``smat-deploy backends``."""

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy.cli._options import parse_backend_options
from smat_deploy.errors import SmatError
from smat_deploy.runtime import BACKENDS, backend_class


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_backend_options_are_key_value_pairs():
    assert parse_backend_options(["threads=2", "providers=A, B"]) == {"threads": "2", "providers": "A, B"}
    assert parse_backend_options(None) == {}
    for bad, message in ((["threads"], "KEY=VALUE"), (["=2"], "KEY=VALUE"), (["a=1", "a=2"], "given twice")):
        with pytest.raises(SmatError, match=message):
            parse_backend_options(bad)


def test_matte_runs_on_the_named_backend_with_its_options(run_cli, photo, tmp_path, tiny_onnx):
    args = ("matte", photo, "--engine", tiny_onnx, "-o", tmp_path / "a.png", "--json")
    result = run_cli(*args, "--backend", "onnxruntime", "--backend-option", "providers=CPUExecutionProvider")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["engine"]["backend"] == "onnxruntime"
    if backend_class("openvino").unavailable_reason() is None:
        result = run_cli(*args, "--backend", "openvino", "--backend-option", "hint=latency", "--threads", "1")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["engine"]["backend"] == "openvino"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backend", "tflite"), "unknown backend 'tflite'"),
        (("--backend", "torch"), "backend torch cannot open tiny.onnx"),
        (("--backend-option", "seed=1"), "backend onnxruntime does not take option 'seed'"),
        (("--backend-option", "threads=x"), "is a whole number"),
        (("--backend-option", "threads=2", "--threads", "2"), "not both"),
        (("--backend-option", "threads"), "--backend-option must be KEY=VALUE"),
    ],
)
def test_bad_backend_choices_are_one_line(run_cli, photo, tmp_path, tiny_onnx, args, message):
    out = tmp_path / "a.png"
    run_cli("matte", photo, "--engine", tiny_onnx, *args, "-o", out).expect_error(message)
    assert not out.exists()


def test_a_backend_whose_package_is_missing_is_one_line(run_cli, photo, tmp_path):
    reason = backend_class("tensorrt").unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here")
    plan = tmp_path / "smat.plan"
    plan.write_bytes(b"not an engine")
    run_cli("matte", photo, "--engine", plan, "-o", tmp_path / "a.png").expect_error(reason)


def test_bench_and_parity_check_backends_before_anything_runs(run_cli, tiny_onnx):
    run_cli("bench", "--engine", tiny_onnx, "--backend", "tflite").expect_error("unknown backend 'tflite'")
    run_cli("bench", "--engine", tiny_onnx, "--backend", "torch").expect_error("none of --backend torch opens")
    run_cli("bench", "--engine", tiny_onnx, "--backend-option", "bogus=1").expect_error("does not take option 'bogus'")
    run_cli("parity", "--engine", tiny_onnx, "--backend", "tflite").expect_error("unknown backend 'tflite'")


def test_backends_lists_the_registry(run_cli):
    result = run_cli("backends")
    assert result.code == 0, result.stderr
    for name in BACKENDS:
        assert name in result.stdout
    assert "--backend-option providers" in result.stdout
