"""TensorRT engine builder: strongly typed network, one optimisation profile, timing cache.

The interactive pair (``smat_encoder.onnx`` + ``smat_decoder.onnx``) is built with :func:`build_pair`:
two engines whose profiles match, the decoder's derived from the encoder's image profile
(:mod:`smat_deploy.engines.pair_profiles`), each with a sidecar JSON naming its partner.

Precision is decided in the ONNX file (FP16 by AutoCast, INT8 by explicit Q/DQ), so the network is
built strongly typed: TensorRT 11 only builds such networks; on TensorRT 10 we ask for
``STRONGLY_TYPED`` explicitly. The engine is written as a plain ``.plan`` (nothing prepended, so any
TensorRT loader can read it) with a sidecar JSON for everything else.

Everything that can be checked without TensorRT (the ONNX contract, the profile) is checked first,
so a bad request fails with the same message on every machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from smat_deploy._files import atomic_output, sha256_of
from smat_deploy.contract import INPUTS as INPUT_SPECS
from smat_deploy.contract import MIN_SIDE, PAIR_IO, PAIR_ROLES, manifest_path_for, read_manifest
from smat_deploy.contract import OUTPUTS as OUTPUT_SPECS
from smat_deploy.engines.cpu_graph import uses_onnxruntime_operators
from smat_deploy.engines.pair_profiles import ProfileShapes, decoder_shapes, encoder_shapes, profile_record
from smat_deploy.errors import SmatError
from smat_deploy.export.graph_checks import check_graph
from smat_deploy.export.manifest import write_manifest
from smat_deploy.pair import find_pair, pair_role

ENGINE_MANIFEST_FORMAT = "smat-deploy/engine-manifest/1"
INPUTS = ("image", "prompt", "state")


@dataclass(frozen=True)
class Shape:
    batch: int
    height: int
    width: int

    @classmethod
    def parse(cls, text: str, what: str) -> Shape:
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text)
        if not match:
            raise SmatError(f"{what} must be BxHxW (e.g. 1x518x518), got {text!r}")
        return cls(*(int(g) for g in match.groups()))

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        b, h, w = self.batch, self.height, self.width
        return {"image": (b, 3, h, w), "prompt": (b, 1, h, w), "state": (b, 1)}

    def __str__(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}"


@dataclass(frozen=True)
class Profile:
    min: Shape = field(default_factory=lambda: Shape(1, MIN_SIDE, MIN_SIDE))
    opt: Shape = field(default_factory=lambda: Shape(1, 518, 518))
    max: Shape = field(default_factory=lambda: Shape(4, 1568, 1568))

    def validate(self) -> Profile:
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if shape.batch < 1 or shape.height < MIN_SIDE or shape.width < MIN_SIDE:
                raise SmatError(f"--{name} {shape}: batch must be >= 1 and height, width >= {MIN_SIDE}")
        for attr in ("batch", "height", "width"):
            low, mid, high = (getattr(s, attr) for s in (self.min, self.opt, self.max))
            if not low <= mid <= high:
                raise SmatError(f"profile {attr} must satisfy min <= opt <= max, got {low}, {mid}, {high}")
        return self

    def as_dict(self) -> dict:
        return {"min": str(self.min), "opt": str(self.opt), "max": str(self.max)}


@dataclass
class BuildResult:
    engine: Path
    manifest: Path
    seconds: float
    tensorrt_version: str


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason): TensorRT importable and a CUDA GPU present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (pip install tensorrt --extra-index-url https://pypi.nvidia.com)"
    except Exception as err:  # a stub wheel or a broken CUDA install raises other errors at import
        return False, f"TensorRT cannot be imported: {type(err).__name__}: {err}".splitlines()[0]
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is available"
    return True, "ok"


def _check_onnx(onnx_path: Path, io: tuple[list[dict], list[dict]] = (INPUT_SPECS, OUTPUT_SPECS)) -> onnx.ModelProto:
    if not onnx_path.is_file():
        raise SmatError(f"ONNX file not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:
        raise SmatError(f"not a readable ONNX model: {onnx_path} ({type(err).__name__})") from None
    contract = next(c for c in check_graph(model, io=io) if c.name == "io_contract")
    if not contract.passed:
        role = pair_role(onnx_path)
        if role is not None and io[0] == INPUT_SPECS:
            raise SmatError(
                f"{onnx_path} is the interactive pair's {role}: build both engines with "
                "smat-deploy build --interactive --onnx <the pair's folder> (or --onnx <its encoder>)"
            )
        raise SmatError(f"{onnx_path} is not an SMat model: {contract.detail}")
    contrib = uses_onnxruntime_operators(model)
    if contrib:
        raise SmatError(
            f"{onnx_path} is tuned for ONNX Runtime CPU ({', '.join(contrib[:3])}): "
            "build TensorRT engines from smat.onnx, smat_fp16.onnx or smat_int8.onnx (or their pairs)"
        )
    return model


def check_smat_onnx(onnx_path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Refuse a file that is not an SMat ONNX model with the exported I/O contract."""
    return _check_onnx(Path(onnx_path))


def _gpu() -> dict:
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def _check_options(optimization_level: int, workspace_gb: float | None) -> None:
    if not 0 <= optimization_level <= 5:
        raise SmatError(f"--optimization-level must be 0..5, got {optimization_level}")
    if workspace_gb is not None and workspace_gb <= 0:
        raise SmatError(f"--workspace must be positive, got {workspace_gb}")


def _require_tensorrt(what: str = "an engine") -> None:
    available, reason = tensorrt_status()
    if not available:
        raise SmatError(f"cannot build {what}: {reason}")


@dataclass(frozen=True)
class _Options:
    timing_cache: Path | None
    workspace_gb: float | None
    optimization_level: int
    hardware_compatible: bool
    version_compatible: bool


def _serialize(trt: Any, onnx_path: Path, shapes: ProfileShapes, options: _Options) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network, build it with one profile of ``shapes`` (``{input: (min,
    opt, max)}``) and return the serialized engine; the timing cache (when given) is read first and updated after."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    major = int(trt.__version__.split(".")[0])
    if major < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            name = getattr(error, "node_name", lambda: "")() or f"#{error.node()}"
            operator = getattr(error, "node_operator", lambda: "?")()
            errors.append(f"node {name} ({operator}): {error.desc()}")
        raise SmatError(f"TensorRT cannot parse {onnx_path}: " + "; ".join(errors[:4]))
    config = builder.create_builder_config()
    config.builder_optimization_level = options.optimization_level
    if options.workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    optimisation_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        optimisation_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation_profile)
    timing_cache = options.timing_cache
    if timing_cache is not None and timing_cache.is_file():
        cache = config.create_timing_cache(timing_cache.read_bytes())
    else:
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SmatError(f"TensorRT failed to build an engine from {onnx_path.name} (see the warnings above)")
    if timing_cache is not None:
        with atomic_output(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _engine_manifest(
    output: Path,
    onnx_path: Path,
    profile: Profile,
    options: _Options,
    version: str,
    seconds: float,
    role: str = "whole",
) -> dict:
    source_manifest = read_manifest(manifest_path_for(onnx_path)) or {}
    return {
        "format": ENGINE_MANIFEST_FORMAT,
        "engine": output.name,
        "role": role,
        "source": source_manifest.get("source"),
        "sha256": sha256_of(output),
        "profile": profile.as_dict(),
        "precision": source_manifest.get("precision", "unknown"),
        "precision_source": "decided in the ONNX file (strongly typed network)",
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": sha256_of(onnx_path),
        "tensorrt_version": version,
        "gpu": _gpu(),
        "builder_optimization_level": options.optimization_level,
        "hardware_compatible": options.hardware_compatible,
        "version_compatible": options.version_compatible,
        "build_seconds": round(seconds, 1),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def build_engine(
    onnx_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    profile: Profile | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    workspace_gb: float | None = None,
    optimization_level: int = 3,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
) -> BuildResult:
    """Build a strongly typed engine from ``onnx_path``; write ``output`` and its sidecar JSON."""
    profile = (profile or Profile()).validate()
    check_smat_onnx(onnx_path)
    _check_options(optimization_level, workspace_gb)
    _require_tensorrt()
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    options = _Options(
        None if timing_cache is None else Path(timing_cache),
        workspace_gb,
        optimization_level,
        hardware_compatible,
        version_compatible,
    )
    start = time.perf_counter()
    shapes = {
        name: (profile.min.input_shapes()[name], profile.opt.input_shapes()[name], profile.max.input_shapes()[name])
        for name in INPUTS
    }
    serialized = _serialize(trt, onnx_path, shapes, options)
    output = Path(output)
    with atomic_output(output) as tmp:
        tmp.write_bytes(serialized)
    seconds = time.perf_counter() - start
    manifest = _engine_manifest(output, onnx_path, profile, options, trt.__version__, seconds)
    manifest_path = write_manifest(manifest_path_for(output), manifest)
    return BuildResult(output, manifest_path, seconds, trt.__version__)


# -- the interactive pair ------------------------------------------------------------------------------
@dataclass
class PairBuildResult:
    encoder: BuildResult
    decoder: BuildResult
    seconds: float
    tensorrt_version: str
    #: ``{input name: (min, opt, max)}`` of each engine's profile.
    shapes: dict[str, ProfileShapes]


@dataclass(frozen=True)
class PairSources:
    """The two ONNX files of an interactive pair, checked to belong together."""

    encoder: Path
    decoder: Path
    weights_sha256: str
    models: dict[str, onnx.ModelProto]


def find_pair_encoder(folder: str | os.PathLike[str], precision: str = "float32") -> Path:
    """The encoder ONNX file of ``precision``'s pair in ``folder`` (``smat_encoder.onnx``, ``smat_encoder_fp16.onnx``
    ...), its pair checked (:func:`smat_deploy.pair.find_pair`)."""
    return find_pair(folder, precision, ".onnx").encoder


def check_pair_onnx(encoder_onnx: str | os.PathLike[str]) -> PairSources:
    """An encoder ONNX file and its decoder, checked to belong together (:func:`smat_deploy.pair.find_pair`), each
    readable with its half's I/O contract and not tuned for ONNX Runtime's CPU kernels."""
    encoder = Path(encoder_onnx)
    if not encoder.is_file():
        raise SmatError(f"ONNX file not found: {encoder}")
    pair = find_pair(encoder, suffix=".onnx")
    models = {role: _check_onnx(path, PAIR_IO[role]) for role, path in pair.items()}
    return PairSources(pair.encoder, pair.decoder, pair.weights_sha256, models)


def onnx_io(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """A model file's declared inputs and outputs as manifests write them: name, dtype, shape (names for dynamic)."""

    def spec(value: onnx.ValueInfoProto) -> dict:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "undefined"
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        return {"name": value.name, "dtype": dtype, "shape": dims}

    weights = {init.name for init in model.graph.initializer}
    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in weights],
        "outputs": [spec(v) for v in model.graph.output],
    }


def build_pair(
    encoder_onnx: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    profile: Profile | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    workspace_gb: float | None = None,
    optimization_level: int = 3,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
) -> PairBuildResult:
    """Build the interactive pair's engines with matching profiles: ``<output_dir>/smat_encoder.plan`` from the
    encoder's image ``profile`` and ``smat_decoder.plan`` with every input's profile derived from it
    (:func:`~smat_deploy.engines.pair_profiles.decoder_shapes`), each with its sidecar JSON.

    Both engines are built before either file is written, so a failure leaves no half pair behind.
    """
    profile = (profile or Profile()).validate()
    sources = check_pair_onnx(encoder_onnx)
    _check_options(optimization_level, workspace_gb)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise SmatError(f"the pair's engines go into a folder, but {output_dir} is a file")
    _require_tensorrt("the pair's engines")
    import tensorrt as trt

    options = _Options(
        None if timing_cache is None else Path(timing_cache),
        workspace_gb,
        optimization_level,
        hardware_compatible,
        version_compatible,
    )
    shapes = {"encoder": encoder_shapes(profile), "decoder": decoder_shapes(profile)}
    onnx_paths = {"encoder": sources.encoder, "decoder": sources.decoder}
    outputs = {role: output_dir / f"{path.stem}.plan" for role, path in onnx_paths.items()}
    start = time.perf_counter()
    serialized, seconds = {}, {}
    for role in PAIR_ROLES:
        began = time.perf_counter()
        serialized[role] = _serialize(trt, onnx_paths[role], shapes[role], options)
        seconds[role] = time.perf_counter() - began
    output_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for role in PAIR_ROLES:
            stack.enter_context(atomic_output(outputs[role])).write_bytes(serialized[role])
    results = {}
    for role, partner in zip(PAIR_ROLES, reversed(PAIR_ROLES), strict=True):
        manifest = _engine_manifest(
            outputs[role], onnx_paths[role], profile, options, trt.__version__, seconds[role], role
        )
        manifest |= {
            **onnx_io(sources.models[role]),
            "tensor_profiles": profile_record(shapes[role]),
            "pair": {"role": role, "partner": outputs[partner].name, "weights_sha256": sources.weights_sha256},
        }
        manifest_path = write_manifest(manifest_path_for(outputs[role]), manifest)
        results[role] = BuildResult(outputs[role], manifest_path, seconds[role], trt.__version__)
    return PairBuildResult(results["encoder"], results["decoder"], time.perf_counter() - start, trt.__version__, shapes)
