"""TensorRT engine builder: strongly typed network, one optimisation profile, timing cache.

Precision is decided in the ONNX file (FP16 by AutoCast, INT8 by explicit Q/DQ), so the network is
built strongly typed: TensorRT 11 only builds such networks; on TensorRT 10 we ask for
``STRONGLY_TYPED`` explicitly. The engine is written as a plain ``.plan`` (nothing prepended, so any
TensorRT loader can read it) with a sidecar JSON for everything else.

Everything that can be checked without TensorRT (the ONNX contract, the profile) is checked first,
so a bad request fails with the same message on every machine.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from smat_deploy.contract import MIN_SIDE
from smat_deploy._files import atomic_output, sha256_of
from smat_deploy.engines.cpu_graph import uses_onnxruntime_operators
from smat_deploy.errors import SmatError
from smat_deploy.export.graph_checks import check_graph
from smat_deploy.contract import manifest_path_for, read_manifest
from smat_deploy.export.manifest import write_manifest

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


def check_smat_onnx(onnx_path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Refuse a file that is not an SMat ONNX model with the exported I/O contract."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SmatError(f"ONNX file not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:
        raise SmatError(f"not a readable ONNX model: {onnx_path} ({type(err).__name__})") from None
    contract = next(c for c in check_graph(model) if c.name == "io_contract")
    if not contract.passed:
        raise SmatError(f"{onnx_path} is not an SMat model: {contract.detail}")
    contrib = uses_onnxruntime_operators(model)
    if contrib:
        raise SmatError(
            f"{onnx_path} is tuned for ONNX Runtime CPU ({', '.join(contrib[:3])}): "
            "build TensorRT engines from smat.onnx, smat_fp16.onnx or smat_int8.onnx"
        )
    return model


def _gpu() -> dict:
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


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
    if not 0 <= optimization_level <= 5:
        raise SmatError(f"--optimization-level must be 0..5, got {optimization_level}")
    if workspace_gb is not None and workspace_gb <= 0:
        raise SmatError(f"--workspace must be positive, got {workspace_gb}")
    available, reason = tensorrt_status()
    if not available:
        raise SmatError(f"cannot build an engine: {reason}")
    import tensorrt as trt

    start = time.perf_counter()
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
    config.builder_optimization_level = optimization_level
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    optimisation_profile = builder.create_optimization_profile()
    for name in INPUTS:
        optimisation_profile.set_shape(
            name,
            profile.min.input_shapes()[name],
            profile.opt.input_shapes()[name],
            profile.max.input_shapes()[name],
        )
    config.add_optimization_profile(optimisation_profile)
    cache = None
    if timing_cache is not None and Path(timing_cache).is_file():
        cache = config.create_timing_cache(Path(timing_cache).read_bytes())
    else:
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SmatError("TensorRT failed to build the engine (see the warnings above)")
    output = Path(output)
    with atomic_output(output) as tmp:
        tmp.write_bytes(bytes(serialized))
    if timing_cache is not None:
        with atomic_output(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - start
    source_manifest = read_manifest(manifest_path_for(onnx_path)) or {}
    manifest = {
        "format": ENGINE_MANIFEST_FORMAT,
        "engine": output.name,
        "sha256": sha256_of(output),
        "profile": profile.as_dict(),
        "precision": source_manifest.get("precision", "unknown"),
        "precision_source": "decided in the ONNX file (strongly typed network)",
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": sha256_of(onnx_path),
        "tensorrt_version": trt.__version__,
        "gpu": _gpu(),
        "builder_optimization_level": optimization_level,
        "hardware_compatible": hardware_compatible,
        "version_compatible": version_compatible,
        "build_seconds": round(seconds, 1),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    manifest_path = write_manifest(manifest_path_for(output), manifest)
    return BuildResult(output, manifest_path, seconds, trt.__version__)
