"""``smat-deploy triton`` for the interactive pair: two models, ``<name>_encoder`` and ``<name>_decoder``, each
config.pbtxt parsed with Triton's own ModelConfig schema and checked against the I/O ONNX Runtime reads from the
file it was written for (or, for TensorRT engines where TensorRT cannot run, the I/O their sidecar records)."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tiny_pair import make_tiny_pair
from tritonclient.grpc import model_config_pb2

from smat_deploy.engines.tensorrt_build import onnx_io

TRITON_TYPES = {"tensor(float)": model_config_pb2.TYPE_FP32, "float32": model_config_pb2.TYPE_FP32}


def parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_against_onnx_runtime(config: model_config_pb2.ModelConfig, model_file, batched: bool) -> None:
    """Names, dtypes and dims of ``config`` are those ONNX Runtime reads from ``model_file`` (batch axis left out
    when Triton batches; symbolic sizes -1)."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    for declared, args in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [a.name for a in args]
        for tensor, arg in zip(declared, args, strict=True):
            assert tensor.data_type == TRITON_TYPES[arg.type]
            shape = arg.shape[1:] if batched else arg.shape
            assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in shape]


#: What the pair's contract makes of Triton's dims with batching (batch axis left out), written out here.
ENCODER_DIMS = {
    "inputs": {"image": [3, -1, -1]},
    "outputs": {
        "features": [384, -1, -1],
        "class_token": [384],
        "image16": [3, -1, -1],
        "detail2": [96, -1, -1],
        "fusion0": [256, -1, -1],
    },
}
DECODER_DIMS = {
    "inputs": {**ENCODER_DIMS["outputs"], "prompt": [1, -1, -1], "state": [1]},
    "outputs": {"alpha": [1, -1, -1]},
}


def dims(config) -> dict:
    return {
        "inputs": {t.name: list(t.dims) for t in config.input},
        "outputs": {t.name: list(t.dims) for t in config.output},
    }


def test_a_folder_with_the_pair_becomes_two_models(run_cli, tmp_path):
    encoder, decoder = make_tiny_pair(tmp_path / "export")
    repo = tmp_path / "model_repository"
    result = run_cli("triton", "--engine", tmp_path / "export", "-o", repo, "--max-batch", "4", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(p.name for p in repo.iterdir()) == ["smat_decoder", "smat_encoder"]
    for role, source, expected in (("encoder", encoder, ENCODER_DIMS), ("decoder", decoder, DECODER_DIMS)):
        config = parse(repo / f"smat_{role}" / "config.pbtxt")
        assert config.name == f"smat_{role}" and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
        check_against_onnx_runtime(config, source, batched=True)
        assert dims(config) == expected
        version = repo / f"smat_{role}" / "1"
        assert (version / "model.onnx").read_bytes() == source.read_bytes()
        sidecar = json.loads((version / "model.json").read_text())
        assert sidecar["pair"]["role"] == role and sidecar["pair"]["weights_sha256"] == "w" * 64
        assert summary[role]["name"] == f"smat_{role}" and summary[role]["io_from"] == "engine (onnxruntime)"
    assert summary["interactive"] is True and summary["weights_sha256"] == "w" * 64
    # The decoder's inputs are exactly the encoder's outputs plus prompt and state: a client passes them on.
    encoder_config, decoder_config = (parse(repo / f"smat_{r}" / "config.pbtxt") for r in ("encoder", "decoder"))
    passed_on = {(t.name, t.data_type, tuple(t.dims)) for t in encoder_config.output}
    assert passed_on <= {(t.name, t.data_type, tuple(t.dims)) for t in decoder_config.input}


def test_the_encoder_file_names_its_partner_and_a_name_prefixes_both(run_cli, tmp_path):
    encoder, decoder = make_tiny_pair(tmp_path / "export")
    repo = tmp_path / "repo"
    result = run_cli("triton", "-e", encoder, "-o", repo, "--name", "matting", "--kind", "cpu", "--instances", "2")
    assert result.code == 0, result.stderr
    assert "send each photo to matting_encoder once" in result.stdout
    for role, source in (("encoder", encoder), ("decoder", decoder)):
        config = parse(repo / f"matting_{role}" / "config.pbtxt")
        assert config.name == f"matting_{role}" and config.max_batch_size == 8
        assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
        check_against_onnx_runtime(config, source, batched=True)


def test_a_fixed_batch_pair_turns_batching_off_in_both(run_cli, tmp_path):
    encoder, decoder = make_tiny_pair(tmp_path / "export", batch=1)
    assert run_cli("triton", "-e", tmp_path / "export", "-o", tmp_path / "repo").code == 0
    for role, source in (("encoder", encoder), ("decoder", decoder)):
        config = parse(tmp_path / "repo" / f"smat_{role}" / "config.pbtxt")
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
        check_against_onnx_runtime(config, source, batched=False)
        assert all(t.dims[0] == 1 for t in (*config.input, *config.output))


def _plan_pair(folder, source_folder, *, record_io=True, max_batch=4):
    """TensorRT engine files of the pair with sidecars shaped like ``smat-deploy build --interactive`` writes them
    (the bytes are not inspected where TensorRT cannot run)."""
    folder.mkdir()
    for role, partner in (("encoder", "decoder"), ("decoder", "encoder")):
        plan = folder / f"smat_{role}.plan"
        plan.write_bytes(f"{role} engine".encode())
        sidecar = {
            "precision": "float32",
            "profile": {"min": "1x14x14", "opt": "1x518x518", "max": f"{max_batch}x1568x1568"},
            "pair": {"role": role, "partner": f"smat_{partner}.plan", "weights_sha256": "w" * 64},
        }
        if record_io:
            sidecar |= onnx_io(onnx.load(str(source_folder / f"smat_{role}.onnx")))
        plan.with_suffix(".json").write_text(json.dumps(sidecar))
    return folder


@pytest.mark.parametrize("record_io", [True, False], ids=["recorded-io", "contract-io"])
def test_a_tensorrt_pair_without_tensorrt_uses_the_sidecars(run_cli, tmp_path, record_io):
    from smat_deploy.runtime.tensorrt import TensorRTBackend

    if TensorRTBackend.unavailable_reason() is None:
        pytest.skip("TensorRT runs here: the engines themselves are read")
    make_tiny_pair(tmp_path / "export")
    engines = _plan_pair(tmp_path / "engines", tmp_path / "export", record_io=record_io)
    result = run_cli("triton", "-e", engines, "-o", tmp_path / "repo", "--max-batch", "4", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    for role, expected in (("encoder", ENCODER_DIMS), ("decoder", DECODER_DIMS)):
        config = parse(tmp_path / "repo" / f"smat_{role}" / "config.pbtxt")
        assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert dims(config) == expected
        assert all(t.data_type == model_config_pb2.TYPE_FP32 for t in (*config.input, *config.output))
        assert f"sidecar smat_{role}.json" in summary[role]["io_from"]
        version = tmp_path / "repo" / f"smat_{role}" / "1"
        assert (version / "model.plan").read_bytes() == f"{role} engine".encode()
        assert json.loads((version / "model.json").read_text())["pair"]["role"] == role
    over = run_cli("triton", "-e", engines, "-o", tmp_path / "repo", "--max-batch", "8")
    over.expect_error("--max-batch 8 is more than smat_encoder.plan accepts")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-e", "{export}/smat_decoder.onnx"],
            "is the pair's decoder, not its encoder: give the pair's encoder or its folder",
        ),
        (["-e", "{export}", "--precision", "fp16"], "has no smat_encoder_fp16.onnx or smat_encoder_fp16.plan"),
        (["-e", "{export}", "--precision", "fp64"], "unknown precision 'fp64'"),
        (["-e", "{whole}", "--interactive"], "is a whole model, not the pair's encoder"),
        (["-e", "{other}"], "were exported from different weights"),
        (["-e", "{export}", "--name", "a/b"], "model name"),
        (["-e", "{export}", "--max-batch", "0"], "--max-batch must be at least 1"),
        (["-e", "{missing}"], "is not beside it"),
    ],
)
def test_bad_pair_requests_are_one_line_errors(run_cli, tiny_onnx, tmp_path, args, message):
    make_tiny_pair(tmp_path / "export")
    make_tiny_pair(tmp_path / "other", weights=("a" * 64, "b" * 64))
    make_tiny_pair(tmp_path / "missing")
    (tmp_path / "missing" / "smat_decoder.onnx").unlink()
    paths = {"export": tmp_path / "export", "whole": tiny_onnx, "other": tmp_path / "other"}
    paths["missing"] = tmp_path / "missing" / "smat_encoder.onnx"
    filled = [a.format(**paths) for a in args]
    run_cli("triton", *filled, "--output", tmp_path / "repo").expect_error(message)
    assert not list(tmp_path.glob("repo/*/config.pbtxt"))


def test_a_folder_with_both_onnx_and_plan_asks_which(run_cli, tmp_path):
    make_tiny_pair(tmp_path / "export")
    (tmp_path / "export" / "smat_encoder.plan").write_bytes(b"engine")
    run_cli("triton", "-e", tmp_path / "export", "-o", tmp_path / "repo").expect_error(
        "holds smat_encoder.onnx and smat_encoder.plan: give the encoder file of the pair to use"
    )


@pytest.mark.heavy
def test_the_exported_pair(run_cli, exported, tmp_path):
    """The real pair (the session's export): each config is the file's own I/O; the sidecars travel with them."""
    folder = exported["dir"]
    assert run_cli("triton", "-e", folder, "--output", tmp_path / "repo").code == 0
    for role, expected in (("encoder", ENCODER_DIMS), ("decoder", DECODER_DIMS)):
        config = parse(tmp_path / "repo" / f"smat_{role}" / "config.pbtxt")
        check_against_onnx_runtime(config, folder / f"smat_{role}.onnx", batched=True)
        assert dims(config) == expected
        sidecar = json.loads((tmp_path / "repo" / f"smat_{role}" / "1" / "model.json").read_text())
        assert [i["name"] for i in sidecar["inputs"]] == [t.name for t in config.input]
        assert sidecar["pair"]["role"] == role
