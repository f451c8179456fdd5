"""``smat-deploy triton``: every generated config.pbtxt is parsed with Triton's own ModelConfig schema
(tritonclient's model_config_pb2; unknown fields or malformed text fail) and checked against the real
inputs and outputs of the engine it was written for."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import numpy_helper
from tritonclient.grpc import model_config_pb2

from smat_deploy.runtime import Runtime
from smat_deploy.serve.model_repository import engine_io, triton_model

DTYPES = {"float32": model_config_pb2.TYPE_FP32}


def parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_against_engine(config: model_config_pb2.ModelConfig, engine, batched: bool) -> None:
    """Names, dtypes and dims of ``config`` equal the engine's own, as ONNX Runtime reports them."""
    info = Runtime.open(engine, device="cpu").info
    for declared, specs in ((config.input, info.inputs), (config.output, info.outputs)):
        assert [t.name for t in declared] == [s["name"] for s in specs]
        for tensor, spec in zip(declared, specs, strict=True):
            assert tensor.data_type == DTYPES[spec["dtype"]]
            shape = spec["shape"][1:] if batched else spec["shape"]
            assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in shape]


def test_dynamic_onnx_model(run_cli, tiny_onnx, tmp_path):
    repo = tmp_path / "model_repository"
    result = run_cli("triton", "--engine", tiny_onnx, "-o", repo, "--max-batch", "6", "--instances", "2", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    config = parse(repo / "smat" / "config.pbtxt")
    assert config.name == "smat" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 6
    check_against_engine(config, tiny_onnx, batched=True)
    assert {t.name: list(t.dims) for t in config.input} == {"image": [3, -1, -1], "prompt": [1, -1, -1], "state": [1]}
    assert [list(t.dims) for t in config.output] == [[1, -1, -1]]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    model_file = repo / "smat" / "1" / "model.onnx"
    assert model_file.read_bytes() == tiny_onnx.read_bytes()
    assert json.loads((repo / "smat" / "1" / "model.json").read_text())["precision"] == "float32"
    assert summary["max_batch_size"] == 6 and summary["config"] == str(repo / "smat" / "config.pbtxt")
    assert summary["io_from"] == "engine (onnxruntime)"


def test_fixed_size_and_fixed_batch_models(run_cli, tiny_onnx_factory, tmp_path):
    fixed_size = tiny_onnx_factory(tmp_path / "fixed_size.onnx", size=(32, 48))
    assert run_cli("triton", "-e", fixed_size, "--output", tmp_path / "r1", "--kind", "cpu").code == 0
    config = parse(tmp_path / "r1" / "smat" / "config.pbtxt")
    check_against_engine(config, fixed_size, batched=True)
    assert list(config.input[0].dims) == [3, 32, 48]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU

    fixed_batch = tiny_onnx_factory(tmp_path / "fixed_batch.onnx", batch=2)
    result = run_cli("triton", "-e", fixed_batch, "--output", tmp_path / "r2", "--name", "smat_b2")
    assert result.code == 0, result.stderr
    assert "fixed batch of 2" in result.stdout
    config = parse(tmp_path / "r2" / "smat_b2" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    check_against_engine(config, fixed_batch, batched=False)
    assert list(config.input[0].dims) == [2, 3, -1, -1]


@pytest.mark.heavy
def test_the_exported_smat_model(run_cli, exported, tmp_path):
    """The real export: its contract, its sidecar and the generated config agree."""
    engine = exported["dir"] / "smat.onnx"
    assert run_cli("triton", "-e", engine, "--output", tmp_path / "repo").code == 0
    config = parse(tmp_path / "repo" / "smat" / "config.pbtxt")
    check_against_engine(config, engine, batched=True)
    assert (tmp_path / "repo" / "smat" / "1" / "model.onnx").stat().st_size == engine.stat().st_size
    sidecar = json.loads((tmp_path / "repo" / "smat" / "1" / "model.json").read_text())
    assert [i["name"] for i in sidecar["inputs"]] == [t.name for t in config.input]


def test_external_data_is_copied(run_cli, tiny_onnx_factory, tmp_path):
    (tmp_path / "src").mkdir()
    model = onnx.load(str(tiny_onnx_factory(tmp_path / "src" / "inline.onnx")))
    model.graph.initializer.append(numpy_helper.from_array(np.arange(4096, dtype=np.float32), "weights"))
    onnx.save(model, str(tmp_path / "src" / "ext.onnx"), save_as_external_data=True, size_threshold=1024,
              all_tensors_to_one_file=True, location="ext.onnx.data")  # fmt: skip
    assert run_cli("triton", "-e", tmp_path / "src" / "ext.onnx", "--output", tmp_path / "repo").code == 0
    version = tmp_path / "repo" / "smat" / "1"
    assert (tmp_path / "src" / "ext.onnx.data").stat().st_size > 0
    assert (version / "ext.onnx.data").read_bytes() == (tmp_path / "src" / "ext.onnx.data").read_bytes()
    assert Runtime.open(version / "model.onnx", device="cpu").info.inputs[0]["name"] == "image"


def test_plan_without_tensorrt_uses_the_sidecar_profile(run_cli, tmp_path):
    from smat_deploy.runtime.tensorrt import TensorRTBackend

    if TensorRTBackend.unavailable_reason() is None:
        pytest.skip("TensorRT runs here: the engine itself is read (tests/engines cover building one)")
    plan = tmp_path / "smat_fp16.plan"
    plan.write_bytes(b"not inspected without TensorRT")
    plan.with_suffix(".json").write_text(
        json.dumps({"precision": "fp16", "profile": {"min": "1x14x14", "opt": "1x518x518", "max": "4x1568x1568"}})
    )
    result = run_cli("triton", "-e", plan, "--output", tmp_path / "repo", "--max-batch", "4", "--json")
    assert result.code == 0, result.stderr
    assert "sidecar smat_fp16.json" in json.loads(result.stdout)["io_from"]
    config = parse(tmp_path / "repo" / "smat" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    assert {t.name: list(t.dims) for t in config.input} == {"image": [3, -1, -1], "prompt": [1, -1, -1], "state": [1]}
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "smat" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    over = run_cli("triton", "-e", plan, "--output", tmp_path / "repo", "--max-batch", "8")
    assert over.code == 2 and "--max-batch 8 is more than" in over.stderr and "1..4" in over.stderr
    cpu = run_cli("triton", "-e", plan, "--output", tmp_path / "repo", "--kind", "cpu")
    assert cpu.code == 2 and "GPU" in cpu.stderr
    plan.with_suffix(".json").unlink()
    bare = run_cli("triton", "-e", plan, "--output", tmp_path / "repo")
    assert bare.code == 2 and "no sidecar JSON" in bare.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "torch"], "export one first"),
        (["-e", "model.pth"], "export one first"),
        (["-e", "missing.onnx"], "engine not found"),
        (["-e", "weights.bin"], "unknown engine type"),
        (["--name", "a/b"], "model name"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--instances", "0"], "--instances must be at least 1"),
        (["--kind", "tpu"], "--kind must be one of"),
    ],
)
def test_bad_requests_are_one_line_errors(run_cli, tiny_onnx, tmp_path, args, message):
    engine_args = [] if "-e" in args else ["-e", str(tiny_onnx)]
    result = run_cli("triton", *engine_args, *args, "--output", tmp_path / "repo")
    assert result.code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "repo" / "smat" / "config.pbtxt").exists()


def test_a_model_that_breaks_the_contract_is_refused(run_cli, tiny_onnx_factory, tmp_path):
    broken = tiny_onnx_factory(tmp_path / "broken.onnx", names=("img", "prompt", "state", "alpha"))
    result = run_cli("triton", "-e", broken, "--output", tmp_path / "repo")
    assert result.code == 2 and "does not match the SMat contract" in result.stderr


def test_library_api(tiny_onnx):
    model = triton_model(engine_io(tiny_onnx), "matting", max_batch=2, instances=3, kind="gpu", max_queue_delay_us=0)
    config = text_format.Parse(model.to_pbtxt(), model_config_pb2.ModelConfig())
    assert config.name == "matting" and config.max_batch_size == 2
    assert config.instance_group[0].count == 3
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
