"""The TensorRT code against NVIDIA's real TensorRT Python API: the API surface, not behaviour.

This checks names, enum members and argument counts (and keyword names, and which TensorRT class or
enum each TensorRT argument is) against NVIDIA's own Python bindings for TensorRT 11.4, the newest
10.x (10.16) and the oldest 10.x (10.0, the floor of ``tensorrt>=10``). It does not check that an
engine builds, what the parser accepts, numbers, CUDA streams or memory: nothing runs on TensorRT.

How: pip installs ``tensorrt-cu12-bindings`` (the bindings only, into pytest's cache); three stub
libraries compiled here stand in for TensorRT's, so the real module imports and its API is dumped
(``tensorrt_api.py``). ``build_engine`` and the TensorRT runtime backend then run against stand-ins
made from that dump: any attribute a version lacks raises ``AttributeError``, any call that no real
overload accepts raises ``TypeError``, and every call is recorded for the assertions below. CUDA
(torch's GPU calls) is replaced by no-ops, tensors stay on the CPU.

These run on CPU-only machines; they need pip access to PyPI and a C compiler.
"""

from __future__ import annotations

import contextlib
import json
import threading

import numpy as np
import pytest
import torch
from tensorrt_api import Signature, StandIn, install_bindings

from smat_deploy.contract import EMBEDDING, EMBEDDING_NAMES, padded_grid
from smat_deploy.engines import tensorrt_build
from smat_deploy.engines.tensorrt_build import Profile, Shape, build_engine
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime
from smat_deploy.runtime import tensorrt as trt_backend
from smat_deploy.runtime.devices import as_torch
from smat_deploy.runtime.sizing import SizePolicy

#: What smat_deploy's TensorRT code touches (build and runtime), by class.
USED = {
    "Logger": {"WARNING"},
    "Builder": {"create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"},
    "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED"},
    "INetworkDefinition": set(),
    "OnnxParser": {"parse_from_file", "num_errors", "get_error"},
    "ParserError": {"node_name", "node_operator", "node", "desc"},
    "IBuilderConfig": {
        "builder_optimization_level",
        "set_memory_pool_limit",
        "hardware_compatibility_level",
        "set_flag",
        "add_optimization_profile",
        "create_timing_cache",
        "set_timing_cache",
        "get_timing_cache",
    },
    "MemoryPoolType": {"WORKSPACE"},
    "HardwareCompatibilityLevel": {"AMPERE_PLUS"},
    "BuilderFlag": {"VERSION_COMPATIBLE"},
    "IOptimizationProfile": {"set_shape"},
    "ITimingCache": {"serialize"},
    "IHostMemory": set(),
    "Runtime": {"deserialize_cuda_engine"},
    "ICudaEngine": {
        "num_io_tensors",
        "get_tensor_name",
        "get_tensor_dtype",
        "get_tensor_shape",
        "get_tensor_mode",
        "num_optimization_profiles",
        "get_tensor_profile_shape",
        "create_execution_context",
    },
    "IExecutionContext": {"set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3"},
    "TensorIOMode": {"INPUT", "OUTPUT"},
    "DataType": {"FLOAT", "HALF", "INT8", "INT32", "BOOL"},
    "Dims": set(),
}


# -- (a) the dump ----------------------------------------------------------------------------------
def test_the_real_api_has_what_the_code_uses(api):
    for name, attributes in USED.items():
        assert name in api.classes, f"TensorRT {api.version} has no {name}"
        assert attributes <= set(api.classes[name].attributes), (name, attributes - set(api.classes[name].attributes))
    assert api.classes["Logger"].bases == ["Logger", "ILogger"]
    assert "__buffer__" in api.classes["IHostMemory"].special  # bytes(serialized) works
    assert {"__len__", "__getitem__"} <= set(api.classes["Dims"].special)  # tuple(dims) works
    assert "execute_async_v2" not in api.classes["IExecutionContext"].attributes  # gone since 10.0
    assert "build_engine" not in api.classes["Builder"].attributes


def test_precision_flags_are_gone_in_11_and_strongly_typed_is_the_only_mode(api):
    """The reason the network is strongly typed and precision lives in the ONNX file."""
    flags = set(api.classes["BuilderFlag"].enum)
    network_flags = api.classes["NetworkDefinitionCreationFlag"].enum
    if api.major >= 11:
        assert not flags & {"FP16", "INT8", "BF16", "FP8", "INT4"}
        assert "IInt8Calibrator" not in api.classes and "IInt8EntropyCalibrator2" not in api.module
        assert "EXPLICIT_BATCH" not in network_flags and "STRONGLY_TYPED" in network_flags  # kept, ignored
    else:
        assert {"FP16", "INT8"} <= flags
        assert "STRONGLY_TYPED" in network_flags


def test_every_signature_in_the_dump_parses(api):
    count = 0
    for spec in api.classes.values():
        for name in spec.methods | set(spec.special):
            for signature in spec.signatures(name):
                assert signature.returns or name.startswith("__"), signature.text
                count += 1
    assert count > 1000
    parsed = Signature.parse(api.classes["Logger"].special["__init__"][0], bound=True)
    assert [(p.name, p.has_default) for p in parsed.params] == [("min_severity", True)]
    assert api.type_named(parsed.params[0].annotation).name == "ILogger.Severity"


def test_a_version_pip_cannot_install_fails_in_one_line(tmp_path):
    with pytest.raises(pytest.fail.Exception) as failed:
        install_bindings(tmp_path, "0.0.0.0")
    message = str(failed.value)
    assert message.startswith("cannot install tensorrt-cu12-bindings==0.0.0.0 with pip: ") and "\n" not in message
    assert not failed.value.pytrace and list(tmp_path.iterdir()) == []


# -- (b) build_engine ------------------------------------------------------------------------------
def _build(trt, monkeypatch, onnx_path, output, **options):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tensorrt_build, "_gpu", lambda: {"name": "stand-in", "compute_capability": "9.0"})
    trt.returns("Builder.build_serialized_network", trt.new("IHostMemory", b"serialized engine"))
    trt.returns("ITimingCache.serialize", trt.new("IHostMemory", b"timing cache"))
    return build_engine(onnx_path, output, **options)


def _one(trt, target):
    calls = trt.calls_to(target)
    assert len(calls) == 1, (target, calls)
    return calls[0]


def test_build_engine_runs_against_the_real_api(trt, monkeypatch, tiny_onnx, tmp_path):
    m = trt.module
    profile = Profile(Shape(1, 14, 14), Shape(2, 266, 300), Shape(4, 518, 600))
    cache = tmp_path / "smat.cache"
    result = _build(
        trt,
        monkeypatch,
        tiny_onnx,
        tmp_path / "smat.plan",
        profile=profile,
        timing_cache=cache,
        workspace_gb=2,
        optimization_level=4,
        hardware_compatible=True,
        version_compatible=True,
    )
    assert trt.violations == [] and trt.missing == []

    logger = _one(trt, "Builder").args[0]
    assert isinstance(logger, m.Logger) and _one(trt, "Logger").args == (m.Logger.WARNING,)
    network = _one(trt, "Builder.create_network")
    strongly_typed = 1 << int(m.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert network.args == ((strongly_typed if trt.api.major < 11 else 0),)  # TensorRT 11: always strongly typed
    assert _one(trt, "OnnxParser").args == (network.result, logger)
    assert _one(trt, "OnnxParser.parse_from_file").args == (str(tiny_onnx),)

    config = _one(trt, "Builder.create_builder_config").result
    assert _one(trt, "IBuilderConfig.builder_optimization_level=").args == (4,)
    assert _one(trt, "IBuilderConfig.set_memory_pool_limit").args == (m.MemoryPoolType.WORKSPACE, 2 << 30)
    hardware = _one(trt, "IBuilderConfig.hardware_compatibility_level=").args
    assert hardware == (m.HardwareCompatibilityLevel.AMPERE_PLUS,)
    assert _one(trt, "IBuilderConfig.set_flag").args == (m.BuilderFlag.VERSION_COMPATIBLE,)

    optimisation_profile = _one(trt, "Builder.create_optimization_profile").result
    assert [call.args for call in trt.calls_to("IOptimizationProfile.set_shape")] == [
        ("image", (1, 3, 14, 14), (2, 3, 266, 300), (4, 3, 518, 600)),
        ("prompt", (1, 1, 14, 14), (2, 1, 266, 300), (4, 1, 518, 600)),
        ("state", (1, 1), (2, 1), (4, 1)),
    ]
    assert _one(trt, "IBuilderConfig.add_optimization_profile").args == (optimisation_profile,)
    created = _one(trt, "IBuilderConfig.create_timing_cache")
    assert created.args == (b"",)  # no cache file yet
    attached = _one(trt, "IBuilderConfig.set_timing_cache")
    assert attached.args == (created.result,) and attached.kwargs == {"ignore_mismatch": False}
    assert _one(trt, "Builder.build_serialized_network").args == (network.result, config)

    assert result.engine.read_bytes() == b"serialized engine"
    assert cache.read_bytes() == b"timing cache"
    manifest = json.loads(result.manifest.read_text())
    assert manifest["tensorrt_version"] == trt.api.version == result.tensorrt_version
    assert manifest["profile"] == {"min": "1x14x14", "opt": "2x266x300", "max": "4x518x600"}

    trt.calls.clear()  # a second build reads the timing cache the first one wrote
    _build(trt, monkeypatch, tiny_onnx, tmp_path / "again.plan", timing_cache=cache)
    assert _one(trt, "IBuilderConfig.create_timing_cache").args == (b"timing cache",)
    assert not trt.calls_to("IBuilderConfig.set_flag") and not trt.calls_to("IBuilderConfig.set_memory_pool_limit")
    assert trt.violations == [] and trt.missing == []


def test_parser_errors_are_read_with_the_real_api(trt, monkeypatch, tiny_onnx, tmp_path):
    trt.returns("OnnxParser.parse_from_file", False)
    trt.returns("OnnxParser.num_errors", 2)
    errors = [trt.new("ParserError") for _ in range(2)]
    trt.answers("OnnxParser.get_error", lambda parser, index: errors[index])
    trt.answers("ParserError.node_name", lambda error: f"/decoder/Resize_{errors.index(error)}")
    trt.returns("ParserError.node_operator", "Resize")
    trt.returns("ParserError.desc", "antialias is not supported")
    with pytest.raises(SmatError) as raised:
        _build(trt, monkeypatch, tiny_onnx, tmp_path / "smat.plan")
    assert str(raised.value) == (
        f"TensorRT cannot parse {tiny_onnx}: node /decoder/Resize_0 (Resize): antialias is not supported; "
        "node /decoder/Resize_1 (Resize): antialias is not supported"
    )
    assert [call.args for call in trt.calls_to("OnnxParser.get_error")] == [(0,), (1,)]
    assert not (tmp_path / "smat.plan").exists()
    assert trt.violations == [] and trt.missing == []


# -- (c) the runtime backend -----------------------------------------------------------------------
class _Stream:
    cuda_stream = 0x5EED

    def wait_stream(self, other: _Stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _NoCuda:
    """``torch.cuda`` for the backend: no-op devices and streams."""

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device(device: object) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    @staticmethod
    def stream(stream: _Stream) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    @staticmethod
    def current_stream(device: object = None) -> _Stream:
        return _Stream()

    @staticmethod
    def Stream(device: object = None) -> _Stream:  # torch's name
        return _Stream()


class _TorchOnCpu:
    """``torch`` as the backend module sees it: the real one, with CUDA replaced by no-ops and tensors on the CPU."""

    cuda = _NoCuda()

    @staticmethod
    def empty(*size: object, dtype: torch.dtype | None = None, device: object = None) -> torch.Tensor:
        return torch.zeros(*size, dtype=dtype)

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)


ENGINE_TENSORS = {"image": (-1, 3, -1, -1), "prompt": (-1, 1, -1, -1), "state": (-1, 1), "alpha": (-1, 1, -1, -1)}
ENGINE_PROFILE = ((1, 3, 14, 14), (1, 3, 266, 266), (2, 3, 518, 600))


@pytest.fixture
def engine_file(trt, monkeypatch, tmp_path):
    """A ``.plan`` the stand-in runtime 'deserializes' into an engine with the SMat contract, and a CPU-only torch."""
    monkeypatch.setattr(trt_backend, "_torch", _TorchOnCpu)
    monkeypatch.setattr(trt_backend, "torch_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(trt_backend, "_on_device", lambda array, device: as_torch(array).float().contiguous())
    m, names = trt.module, list(ENGINE_TENSORS)
    trt.returns("ICudaEngine.num_io_tensors", len(names))
    trt.answers("ICudaEngine.get_tensor_name", lambda engine, index: names[index])
    trt.answers("ICudaEngine.get_tensor_dtype", lambda engine, name: m.DataType.FLOAT)
    trt.answers(  # a tensor the contract lacks ("img" below) is shaped like an image
        "ICudaEngine.get_tensor_shape", lambda engine, name: trt.new("Dims", ENGINE_TENSORS.get(name, (-1, 3, -1, -1)))
    )
    trt.answers(
        "ICudaEngine.get_tensor_mode",
        lambda engine, name: m.TensorIOMode.OUTPUT if name == "alpha" else m.TensorIOMode.INPUT,
    )
    trt.returns("ICudaEngine.num_optimization_profiles", 1)
    trt.answers(
        "ICudaEngine.get_tensor_profile_shape",
        lambda engine, name, index: [trt.new("Dims", shape) for shape in ENGINE_PROFILE],
    )

    def alpha_shape(context: StandIn, name: str) -> StandIn:
        shapes = [c.args for c in trt.calls_to("IExecutionContext.set_input_shape") if c.receiver is context]
        image = [shape for tensor, shape in shapes if tensor == "image"][-1]
        return trt.new("Dims", (image[0], 1, *image[2:]))

    trt.answers("IExecutionContext.get_tensor_shape", alpha_shape)
    path = tmp_path / "smat.plan"
    path.write_bytes(b"plan bytes")
    path.with_suffix(".json").write_text(json.dumps({"precision": "float16"}))
    return path


def test_the_runtime_backend_runs_against_the_real_api(trt, engine_file):
    runtime = Runtime.open(engine_file)
    info = runtime.info
    assert info.backend == "tensorrt" and info.precision == "fp16" and info.device == "cuda:0"  # one name: fp16
    assert info.providers == [f"tensorrt-{trt.api.version}"]
    assert info.limits == {"batch": [1, 2], "height": [14, 518], "width": [14, 600]}
    assert [spec["name"] for spec in info.inputs] == ["image", "prompt", "state"]
    assert _one(trt, "Runtime.deserialize_cuda_engine").args == (b"plan bytes",)
    assert isinstance(_one(trt, "Runtime").args[0], trt.module.ILogger)
    assert _one(trt, "ICudaEngine.get_tensor_profile_shape").args == ("image", 0)

    alpha = runtime(np.zeros((40, 60, 3), np.uint8))
    assert alpha.shape == (40, 60)
    context = _one(trt, "ICudaEngine.create_execution_context").result
    assert [c.args for c in trt.calls_to("IExecutionContext.set_input_shape")] == [
        ("image", (1, 3, 40, 60)),
        ("prompt", (1, 1, 40, 60)),
        ("state", (1, 1)),
    ]
    addresses = trt.calls_to("IExecutionContext.set_tensor_address")
    assert [c.args[0] for c in addresses] == ["image", "prompt", "state", "alpha"]
    assert all(isinstance(c.args[1], int) and c.args[1] for c in addresses)
    assert _one(trt, "IExecutionContext.execute_async_v3").args == (_Stream.cuda_stream,)
    assert {c.receiver for c in addresses} == {context}

    worker = threading.Thread(target=runtime, args=(np.zeros((1, 3, 28, 28), np.float32),))
    worker.start()
    worker.join()
    assert len(trt.calls_to("ICudaEngine.create_execution_context")) == 2  # one context per thread
    assert len(trt.calls_to("IExecutionContext.execute_async_v3")) == 2
    assert trt.violations == [] and trt.missing == []


def test_the_memory_estimate_asks_the_engine_with_the_real_api(trt, engine_file):
    """TensorRT's own figure for given shapes: a context that allocates nothing, its input shapes set, then
    ``update_device_memory_size_for_shapes`` (TensorRT 10.1 and later); without it, the conservative profile."""
    runtime = Runtime.open(engine_file)
    has_query = "update_device_memory_size_for_shapes" in trt.api.classes["IExecutionContext"].attributes
    trt.returns("IExecutionContext.update_device_memory_size_for_shapes", 250_000_000)
    estimate = runtime.backend.estimate_memory(2, 300, 400)
    if not has_query:
        assert estimate.profile == "conservative"
        assert trt.missing == ["tensorrt.IExecutionContext.update_device_memory_size_for_shapes"]
        return
    io_bytes = 2 * 300 * 400 * 5 * 4 + 2 * 4
    assert estimate.total_mb == pytest.approx((250_000_000 + io_bytes) / 1e6)
    assert estimate.profile == "tensorrt (the engine's own figure)"
    (created,) = trt.calls_to("ICudaEngine.create_execution_context")
    assert created.args == (trt.module.ExecutionContextAllocationStrategy.USER_MANAGED,)
    assert [c.args for c in trt.calls_to("IExecutionContext.set_input_shape")] == [
        ("image", (2, 3, 300, 400)),
        ("prompt", (2, 1, 300, 400)),
        ("state", (2, 1)),
    ]
    runtime.backend.estimate_memory(1, 100, 100)  # the sizing context is made once
    assert len(trt.calls_to("ICudaEngine.create_execution_context")) == 1
    assert trt.violations == [] and trt.missing == []


def test_a_photo_larger_than_the_profile_runs_scaled_to_fit_it(trt, engine_file):
    """Under a size policy, a photo above the engine's optimisation profile (518x600 at most) is scaled to fit
    it and its alpha comes back at the photo's size, instead of being refused."""
    runtime = Runtime.open(engine_file, size_policy=SizePolicy(max_memory_mb=100_000, upsampling="nearest"))
    trt.returns("IExecutionContext.update_device_memory_size_for_shapes", 1_000_000)
    alpha = runtime(np.zeros((900, 1200, 3), np.uint8))
    assert alpha.shape == (900, 1200)
    shapes = [c.args for c in trt.calls_to("IExecutionContext.set_input_shape") if c.args[0] == "image"]
    assert shapes[-1] == ("image", (1, 3, 450, 600))
    assert trt.violations == []


def test_the_runtime_backend_refuses_with_the_real_api(trt, engine_file):
    trt.answers("ICudaEngine.get_tensor_name", lambda engine, index: ["prompt", "state", "alpha", "img"][index])
    with pytest.raises(SmatError, match=r"does not match the SMat contract.*missing input image"):
        Runtime.open(engine_file)
    trt.returns("Runtime.deserialize_cuda_engine", None)
    with pytest.raises(SmatError, match=f"TensorRT {trt.api.version} cannot load .*smat.plan"):
        Runtime.open(engine_file)
    assert trt.violations == [] and trt.missing == []


#: The pair's engines as ``build --interactive`` writes them: each tensor's shape (-1: dynamic) and direction.
PAIR_TENSORS = {
    "encoder": {"image": (-1, 3, -1, -1), **{spec["name"]: None for spec in EMBEDDING}},
    "decoder": {
        **{spec["name"]: "in" for spec in EMBEDDING},
        "prompt": (-1, 1, -1, -1),
        "state": (-1, 1),
        "alpha": (-1, 1, -1, -1),
    },
}


def _embedding_shapes(batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """The contract's embedding shapes for one photo size (the padded grid)."""
    grid_h, grid_w = padded_grid(height, width)
    shapes = {}
    for spec in EMBEDDING:
        dims = []
        for dim in spec["shape"]:
            if dim == "batch":
                dims.append(batch)
            elif isinstance(dim, int):
                dims.append(dim)
            else:
                scale = int(dim.split("*")[0]) if "*" in dim else 1
                dims.append(scale * (grid_h if dim.endswith("grid_height") else grid_w))
        shapes[spec["name"]] = tuple(dims)
    return shapes


@pytest.fixture
def pair_files(trt, monkeypatch, tmp_path):
    """``smat_encoder.plan`` and ``smat_decoder.plan`` with the manifests ``build --interactive`` writes, which the
    stand-in runtime 'deserializes' into engines with the roles' tensors (told apart by their bytes)."""
    monkeypatch.setattr(trt_backend, "_torch", _TorchOnCpu)
    monkeypatch.setattr(trt_backend, "torch_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(trt_backend, "_on_device", lambda array, device: as_torch(array).float().contiguous())
    m = trt.module
    trt.answers("Runtime.deserialize_cuda_engine", lambda runtime, data: trt.new("ICudaEngine", data.decode()))
    role_of = lambda engine: engine._payload  # noqa: E731 - "encoder" or "decoder", the plan's bytes
    trt.answers("ICudaEngine.num_io_tensors", lambda engine: len(PAIR_TENSORS[role_of(engine)]))
    trt.answers("ICudaEngine.get_tensor_name", lambda engine, index: list(PAIR_TENSORS[role_of(engine)])[index])
    trt.answers("ICudaEngine.get_tensor_dtype", lambda engine, name: m.DataType.FLOAT)

    def declared_shape(engine, name):
        shape = PAIR_TENSORS[role_of(engine)][name]
        if not isinstance(shape, tuple):  # an embedding tensor: dynamic but for its channels
            spec = next(spec for spec in EMBEDDING if spec["name"] == name)
            shape = tuple(dim if isinstance(dim, int) else -1 for dim in spec["shape"])
        return trt.new("Dims", shape)

    def mode(engine, name):
        output = name == "alpha" or (role_of(engine) == "encoder" and name != "image")
        return m.TensorIOMode.OUTPUT if output else m.TensorIOMode.INPUT

    trt.answers("ICudaEngine.get_tensor_shape", declared_shape)
    trt.answers("ICudaEngine.get_tensor_mode", mode)
    trt.returns("ICudaEngine.num_optimization_profiles", 1)
    channels = {"image": 3, "prompt": 1}
    trt.answers(
        "ICudaEngine.get_tensor_profile_shape",
        lambda engine, name, index: [
            trt.new("Dims", (shape[0], channels[name], *shape[2:])) for shape in ENGINE_PROFILE
        ],
    )

    def output_shape(context, name):
        shapes = dict(c.args for c in trt.calls_to("IExecutionContext.set_input_shape") if c.receiver is context)
        if "image" in shapes:
            batch, _, height, width = shapes["image"]
            return trt.new("Dims", _embedding_shapes(batch, height, width)[name])
        batch, _, height, width = shapes["prompt"]
        return trt.new("Dims", (batch, 1, height, width))

    trt.answers("IExecutionContext.get_tensor_shape", output_shape)
    paths = {}
    for role, partner in (("encoder", "decoder"), ("decoder", "encoder")):
        path = tmp_path / f"smat_{role}.plan"
        path.write_bytes(role.encode())
        manifest = {
            "precision": "float32",
            "role": role,
            "pair": {"role": role, "partner": f"smat_{partner}.plan", "weights_sha256": "e" * 64},
        }
        path.with_suffix(".json").write_text(json.dumps(manifest))
        paths[role] = path
    return paths


def test_the_tensorrt_pair_opens_and_answers_clicks_against_the_real_api(trt, pair_files):
    """``Predictor.open`` on ``build --interactive``'s engines: each plan opened as its role, its tensors checked
    against the role's contract, the embedding kept on the device and fed to the decoder by name."""
    from smat_deploy import Predictor

    predictor = Predictor.open(pair_files["encoder"].parent, backend="tensorrt")
    assert predictor.backend == "tensorrt" and predictor.device == "cuda:0" and predictor.precision == "float32"
    assert (predictor.encoder.role, predictor.decoder.role) == ("encoder", "decoder")
    assert predictor.encoder.limits.height == (14, 518) and predictor.decoder.limits.width == (14, 600)
    embedding = predictor.embed(np.zeros((40, 60, 3), np.uint8))
    assert all(isinstance(tensor, torch.Tensor) for tensor in embedding.tensors.values())  # stays on the device
    assert {name: tuple(t.shape) for name, t in embedding.tensors.items()} == _embedding_shapes(1, 40, 60)
    alpha = predictor.predict(embedding, [{"type": "point", "x": 10, "y": 10, "radius": 4}])
    assert alpha.shape == (40, 60)
    set_shapes = [c.args for c in trt.calls_to("IExecutionContext.set_input_shape")]
    assert set_shapes[0] == ("image", (1, 3, 40, 60))
    decoder_shapes = dict(set_shapes[1:])
    assert decoder_shapes == {**_embedding_shapes(1, 40, 60), "prompt": (1, 1, 40, 60), "state": (1, 1)}
    addresses = [c.args[0] for c in trt.calls_to("IExecutionContext.set_tensor_address")]
    assert addresses == ["image", *EMBEDDING_NAMES, *EMBEDDING_NAMES, "prompt", "state", "alpha"]
    assert len(trt.calls_to("IExecutionContext.execute_async_v3")) == 2
    assert trt.violations == [] and trt.missing == []


def test_a_tensorrt_plan_of_another_role_is_refused_against_the_real_api(trt, pair_files):
    """An encoder plan whose engine is a decoder (its manifest says encoder) fails the role's contract in one line."""
    from smat_deploy import Predictor

    pair_files["encoder"].write_bytes(b"decoder")  # the decoder's engine under the encoder's name
    with pytest.raises(SmatError, match=r"smat_encoder\.plan does not match the SMat contract") as caught:
        Predictor.open(pair_files["encoder"].parent, backend="tensorrt")
    assert "\n" not in str(caught.value)
    assert trt.violations == []


# -- (d) the stand-ins catch what the real API would refuse ----------------------------------------
def test_the_stand_ins_refuse_what_the_real_api_refuses(trt):
    m = trt.module
    logger = m.Logger(m.Logger.WARNING)
    builder = m.Builder(logger)
    network = builder.create_network(0)
    config = builder.create_builder_config()
    if trt.api.major >= 11:
        with pytest.raises(AttributeError, match="BuilderFlag has no attribute 'FP16'"):
            config.set_flag(m.BuilderFlag.FP16)
        with pytest.raises(AttributeError, match="has no attribute 'INT8'"):
            config.set_flag(m.BuilderFlag.INT8)
        with pytest.raises(AttributeError, match="tensorrt has no attribute 'IInt8EntropyCalibrator2'"):
            m.IInt8EntropyCalibrator2  # noqa: B018
        assert trt.missing == [
            "tensorrt.BuilderFlag.FP16",
            "tensorrt.BuilderFlag.INT8",
            "tensorrt.IInt8EntropyCalibrator2",
        ]
    else:
        config.set_flag(m.BuilderFlag.FP16)  # still in TensorRT 10
    with pytest.raises(AttributeError, match="has no attribute 'build_engine'"):  # removed in TensorRT 10
        builder.build_engine(network, config)
    with pytest.raises(AttributeError, match="has no attribute 'max_workspace_size'"):
        config.max_workspace_size = 1 << 30
    with pytest.raises(TypeError, match=r"no overload of IBuilderConfig\.set_flag accepts"):
        config.set_flag()
    with pytest.raises(TypeError, match=r"takes 1 positional argument\(s\), 2 given"):
        config.set_flag(m.BuilderFlag.VERSION_COMPATIBLE, True)
    with pytest.raises(TypeError, match="flag must be BuilderFlag, not MemoryPoolType"):
        config.set_flag(m.MemoryPoolType.WORKSPACE)
    with pytest.raises(TypeError, match="unexpected keyword argument 'ignore_missmatch'"):
        config.set_timing_cache(config.create_timing_cache(b""), ignore_missmatch=False)
    with pytest.raises(TypeError, match="missing argument"):
        m.OnnxParser(network)
    with pytest.raises(TypeError, match="logger must be ILogger, not INetworkDefinition"):
        m.Runtime(network)
    with pytest.raises(TypeError, match="No constructor defined"):
        m.ICudaEngine()
    engine = m.Runtime(logger).deserialize_cuda_engine(b"plan")
    with pytest.raises(AttributeError, match="num_io_tensors is read-only"):
        engine.num_io_tensors = 3
    with pytest.raises(AttributeError, match="has no attribute 'execute_async_v2'"):
        engine.create_execution_context().execute_async_v2([], 0)
    with pytest.raises(TypeError, match="has no len"):
        len(engine)
    assert len(trt.violations) == 8
