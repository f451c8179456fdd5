"""Triton model repositories written from an engine's real inputs and outputs (``smat-deploy triton``).

``<repo>/<name>/config.pbtxt`` plus ``<name>/1/model.onnx`` (platform ``onnxruntime_onnx``) or
``<name>/1/model.plan`` (``tensorrt_plan``), and the engine's sidecar JSON as ``1/model.json``.

The I/O comes from the engine itself: ``Runtime.open(engine).info`` (ONNX Runtime for ``.onnx``, TensorRT for
``.plan``). Only where TensorRT cannot run here is a ``.plan`` described by its sidecar JSON (the contract plus
the optimisation profile ``smat-deploy build`` recorded), and the summary says so.

With ``max_batch_size > 0`` Triton's ``dims`` leave out the batch dimension: ``image [B,3,H,W]`` becomes
``dims: [ 3, -1, -1 ]`` and ``state [B,1]`` becomes ``dims: [ 1 ]``. Static sizes (a fixed-size export)
stay numbers; a fixed batch turns Triton's batching off (``max_batch_size: 0``, full shapes).

The interactive pair (``smat-deploy export --interactive``, or its engines from ``smat-deploy build
--interactive``) becomes two models, ``<name>_encoder`` (``image`` -> the five embedding tensors) and
``<name>_decoder`` (the embedding, ``prompt`` and ``state`` -> ``alpha``), each written from its own
file's I/O like a single engine (:func:`pair_io`, :func:`write_pair_repository`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from smat_deploy._files import atomic_output
from smat_deploy.contract import DTYPES, MIN_SIDE, PAIR_IO, manifest_path_for, read_manifest
from smat_deploy.errors import SmatError
from smat_deploy.pair import find_pair as checked_pair
from smat_deploy.runtime.base import CONTRACT_INPUTS, CONTRACT_OUTPUTS, Limits, TensorSpec
from smat_deploy.serve.server import check_model_name

#: Triton's name of each element type (the contract's one dtype table).
TRITON_DTYPES = {name: str(names["triton"]) for name, names in DTYPES.items() if names["triton"] is not None}
KINDS = ("auto", "gpu", "cpu")


@dataclass(frozen=True)
class EngineIO:
    """What a Triton config needs from an engine."""

    engine: Path
    platform: str
    filename: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    limits: Limits
    precision: str
    source: str  # how the I/O was read: "engine (onnxruntime)", "sidecar smat.json", ...


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 else None


def _io_from_sidecar(
    engine: Path,
    platform: tuple[str, str],
    reason: str,
    specs: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] = (CONTRACT_INPUTS, CONTRACT_OUTPUTS),
) -> EngineIO:
    """An engine this machine cannot open, described by its sidecar JSON: ``specs`` (the contract) or the I/O the
    sidecar records, plus the recorded optimisation profile."""
    from smat_deploy.engines.tensorrt_build import Shape

    sidecar = manifest_path_for(engine)
    try:
        manifest = read_manifest(sidecar)
    except (OSError, ValueError) as err:
        raise SmatError(f"cannot read the engine's sidecar {sidecar}: {err}") from None
    profile = manifest.get("profile") if isinstance(manifest, dict) else None
    if not isinstance(profile, dict) or not {"min", "max"} <= profile.keys():
        raise SmatError(f"{reason}, and {engine} has no sidecar JSON with its optimisation profile ({sidecar})")
    low, high = Shape.parse(str(profile["min"]), "profile min"), Shape.parse(str(profile["max"]), "profile max")
    limits = Limits((low.batch, high.batch), (low.height, high.height), (low.width, high.width))
    recorded = [manifest.get(key) for key in ("inputs", "outputs")]
    if all(isinstance(items, list) and items for items in recorded):
        try:
            specs = tuple(  # type: ignore[assignment]
                tuple(TensorSpec(str(i["name"]), str(i["dtype"]), tuple(i["shape"])) for i in items)
                for items in recorded
            )
        except (KeyError, TypeError):
            raise SmatError(f"{sidecar} records its inputs/outputs without name, dtype and shape") from None
    return EngineIO(
        engine,
        *platform,
        *specs,
        limits,
        str(manifest.get("precision", "unknown")),
        f"sidecar {sidecar.name} ({reason})",
    )


def triton_backends() -> str:
    """The file types Triton runs, by the backends that declare a Triton platform: ``.onnx (onnxruntime_onnx)``..."""
    from smat_deploy.runtime import all_backends

    return " or ".join(
        f"{'/'.join(cls.suffixes)} ({cls.triton_platform[0]})" for cls in all_backends() if cls.triton_platform
    )


def engine_io(engine: str | os.PathLike[str]) -> EngineIO:
    """Open ``engine`` with its default backend and read its inputs, outputs and size limits (checked against the
    SMat contract); where that backend cannot run here, its sidecar JSON describes it."""
    from smat_deploy.runtime import Runtime, backend_for

    path = Path(engine)
    backend = backend_for(str(engine) if str(engine) == "torch" else path)
    if backend.triton_platform is None:
        raise SmatError(
            f"Triton runs {triton_backends()} engines, not {backend.name} ones: export one first "
            "(smat-deploy export, smat-deploy build); smat-deploy serve hosts any engine itself"
        )
    if not path.is_file():
        raise SmatError(f"engine not found: {path}")
    if (reason := backend.unavailable_reason()) is not None:
        return _io_from_sidecar(path, backend.triton_platform, reason.split(" (")[0])
    runtime = Runtime.open(path, backend=backend.name, device="cpu" if "cpu" in backend.devices else "auto")
    opened = runtime.backend
    return EngineIO(
        path,
        *backend.triton_platform,
        tuple(opened.inputs),
        tuple(opened.outputs),
        opened.limits,
        opened.precision,
        f"engine ({opened.name})",
    )


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    dims = [_static(d) for d in spec.shape]
    dims = dims[1:] if batched else dims
    return [-1 if d is None else d for d in dims]


@dataclass
class TritonModel:
    """A generated Triton model configuration (and what went into it)."""

    name: str
    platform: str
    max_batch_size: int
    inputs: list[dict]
    outputs: list[dict]
    instance_count: int
    instance_kind: str
    max_queue_delay_us: int
    notes: list[str] = field(default_factory=list)

    @property
    def dynamic_batching(self) -> bool:
        return self.max_batch_size > 0

    def to_pbtxt(self) -> str:
        """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""

        def tensor(item: dict) -> str:
            dims = ", ".join(str(d) for d in item["dims"])
            return f'  {{\n    name: "{item["name"]}"\n    data_type: {item["data_type"]}\n    dims: [ {dims} ]\n  }}'

        lines = [
            f'name: "{self.name}"',
            f'platform: "{self.platform}"',
            f"max_batch_size: {self.max_batch_size}",
            "input [",
            ",\n".join(tensor(item) for item in self.inputs),
            "]",
            "output [",
            ",\n".join(tensor(item) for item in self.outputs),
            "]",
            "instance_group [",
            "  {",
            f"    count: {self.instance_count}",
            f"    kind: {self.instance_kind}",
            "  }",
            "]",
        ]
        if self.dynamic_batching:
            lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {self.max_queue_delay_us}", "}"]
        return "\n".join(lines) + "\n"


def triton_model(
    io: EngineIO,
    name: str = "smat",
    *,
    max_batch: int = 8,
    instances: int = 1,
    kind: str = "auto",
    max_queue_delay_us: int = 1000,
) -> TritonModel:
    """Triton's view of ``io``: batch dimension, dims with -1 for dynamic sizes, batching and instances."""
    check_model_name(name)
    if max_batch < 1:
        raise SmatError("--max-batch must be at least 1")
    if instances < 1:
        raise SmatError("--instances must be at least 1")
    if max_queue_delay_us < 0:
        raise SmatError("--max-queue-delay-ms cannot be negative")
    if kind not in KINDS:
        raise SmatError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if io.platform == "tensorrt_plan" and kind == "cpu":
        raise SmatError("a TensorRT engine runs on a GPU: --kind cpu is for .onnx models")
    notes = []
    # The batch is the first axis of every tensor; read it from the image (the decoder of the pair has none).
    first = next((spec for spec in io.inputs if spec.name == "image"), io.inputs[0])
    fixed_batch = _static(first.shape[0])
    batched = fixed_batch is None
    if batched:
        engine_max = io.limits.batch[1]
        if engine_max is not None and max_batch > engine_max:
            raise SmatError(
                f"--max-batch {max_batch} is more than {io.engine.name} accepts (batch {io.limits.batch[0]}.."
                f"{engine_max}): use --max-batch {engine_max} or less"
            )
        max_batch_size = max_batch
    else:
        max_batch_size = 0
        notes.append(
            f"{io.engine.name} has a fixed batch of {fixed_batch}: Triton batching is off (max_batch_size 0, "
            "dims include the batch)"
        )
    for spec in (*io.inputs, *io.outputs):
        if spec.dtype not in TRITON_DTYPES:
            raise SmatError(f"{spec.name} has dtype {spec.dtype}, which Triton cannot take")

    def describe(spec: TensorSpec) -> dict:
        return {"name": spec.name, "data_type": TRITON_DTYPES[spec.dtype], "dims": _dims(spec, batched)}

    instance_kind = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}.get(kind)
    if instance_kind is None:  # auto: a TensorRT engine needs a GPU; ONNX Runtime takes one when Triton has one
        instance_kind = "KIND_GPU" if io.platform == "tensorrt_plan" else "KIND_AUTO"
    return TritonModel(
        name=name,
        platform=io.platform,
        max_batch_size=max_batch_size,
        inputs=[describe(spec) for spec in io.inputs],
        outputs=[describe(spec) for spec in io.outputs],
        instance_count=instances,
        instance_kind=instance_kind,
        max_queue_delay_us=max_queue_delay_us,
        notes=notes,
    )


def _external_data(onnx_path: Path) -> list[str]:
    """Relative paths of the external-data files an ONNX model references (none for a single-file model)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    locations = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return sorted(locations)


def _copy(source: Path, target: Path) -> None:
    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)


def write_model_repository(
    io: EngineIO, model: TritonModel, repo: str | os.PathLike[str]
) -> dict[str, str | list[str]]:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/<model file>``; every file replaced atomically."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise SmatError(f"--output is a file, expected a folder: {repo}")
    model_dir = repo / model.name
    version_dir = model_dir / "1"
    if version_dir.exists() and not version_dir.is_dir():
        raise SmatError(f"{version_dir} is a file, expected a folder")
    extra = _external_data(io.engine) if io.platform == "onnxruntime_onnx" else []
    for location in extra:
        if not (io.engine.parent / location).is_file():
            raise SmatError(f"{io.engine} refers to external data {location} that is missing")
    version_dir.mkdir(parents=True, exist_ok=True)
    model_file = version_dir / io.filename
    _copy(io.engine, model_file)
    for location in extra:
        target = version_dir / location
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(io.engine.parent / location, target)
    written = [str(model_file), *(str(version_dir / location) for location in extra)]
    sidecar = io.engine.with_suffix(".json")
    if sidecar.is_file():
        _copy(sidecar, model_file.with_suffix(".json"))
        written.append(str(model_file.with_suffix(".json")))
    config = model_dir / "config.pbtxt"
    with atomic_output(config) as tmp:
        tmp.write_text(model.to_pbtxt(), encoding="utf-8")
    return {"config": str(config), "model": str(model_file), "files": [str(config), *written]}


# -- the interactive pair ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairIO:
    """Both halves of the interactive pair, as Triton will see them."""

    encoder: EngineIO
    decoder: EngineIO
    weights_sha256: str

    def items(self) -> tuple[tuple[str, EngineIO], ...]:
        return (("encoder", self.encoder), ("decoder", self.decoder))


def find_pair(source: str | os.PathLike[str], precision: str = "float32") -> tuple[Path, Path]:
    """``(encoder, decoder)`` files of the pair in folder ``source`` (``precision``'s names, ``.onnx`` or ``.plan``)
    or of the pair whose encoder file ``source`` is, checked by :func:`smat_deploy.pair.find_pair`."""
    source = Path(source)
    if not source.exists():
        raise SmatError(f"engine not found: {source}")
    pair = checked_pair(source, precision if source.is_dir() else None)
    return pair.encoder, pair.decoder


def _onnx_session_io(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The I/O ONNX Runtime (Triton's onnxruntime backend) reads from ``path``."""
    from smat_deploy._ort import session
    from smat_deploy.runtime.onnxrt import _specs

    loaded = session(path)
    return _specs(loaded.get_inputs()), _specs(loaded.get_outputs())


def _plan_io(path: Path, role: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], Limits]:
    """A pair engine's I/O and the bounds of its profile 0, read from the engine with TensorRT."""
    from smat_deploy.runtime.tensorrt import _import_tensorrt, engine_specs

    trt = _import_tensorrt()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise SmatError(
            f"TensorRT {trt.__version__} cannot load {path}: not an engine, or built for another version/GPU"
        )
    inputs, outputs = engine_specs(trt, engine)
    sized = "image" if role == "encoder" else "prompt"
    if sized not in {spec.name for spec in inputs}:
        raise SmatError(f"{path.name} has no {sized} input: it is not the pair's {role}")
    low, _, high = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(sized, 0))
    return inputs, outputs, Limits((low[0], high[0]), (low[2], high[2]), (low[3], high[3]))


def _declared_limits(inputs: tuple[TensorSpec, ...], role: str) -> Limits:
    """Bounds a model file's declared shapes imply: static sizes pin a dimension, names leave it free."""
    sized = next((s for s in inputs if s.name == ("image" if role == "encoder" else "prompt")), None)
    if sized is None or len(sized.shape) != 4:
        return Limits()

    def bound(dim: object, low: int) -> tuple[int, int | None]:
        static = _static(dim)
        return (static, static) if static is not None else (low, None)

    return Limits(bound(sized.shape[0], 1), bound(sized.shape[2], MIN_SIDE), bound(sized.shape[3], MIN_SIDE))


def half_io(path: str | os.PathLike[str], role: str) -> EngineIO:
    """One half of the pair as Triton sees it: its own file's I/O (ONNX Runtime for ``.onnx``, TensorRT for
    ``.plan``, or the ``.plan``'s sidecar JSON where TensorRT cannot run), checked against the half's contract."""
    from smat_deploy.runtime import backend_for

    path = Path(path)
    if not path.is_file():
        raise SmatError(f"engine not found: {path}")
    backend = backend_for(path)
    if backend.triton_platform is None:
        raise SmatError(f"Triton runs {triton_backends()} engines, not {backend.name} ones ({path.name})")
    manifest = read_manifest(manifest_path_for(path)) or {}
    precision = str(manifest.get("precision", "unknown"))
    if backend.triton_platform[0] == "tensorrt_plan":
        reason = backend.unavailable_reason()
        if reason is not None:
            contract = tuple(
                tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in specs) for specs in PAIR_IO[role]
            )
            io = _io_from_sidecar(path, backend.triton_platform, reason.split(" (")[0], contract)  # type: ignore[arg-type]
        else:
            inputs, outputs, limits = _plan_io(path, role)
            io = EngineIO(path, *backend.triton_platform, inputs, outputs, limits, precision, "engine (tensorrt)")
    else:
        inputs, outputs = _onnx_session_io(path)
        limits = _declared_limits(inputs, role)
        io = EngineIO(path, *backend.triton_platform, inputs, outputs, limits, precision, "engine (onnxruntime)")
    wanted_in, wanted_out = ([s["name"] for s in specs] for specs in PAIR_IO[role])
    have_in, have_out = [s.name for s in io.inputs], [s.name for s in io.outputs]
    if sorted(have_in) != sorted(wanted_in) or sorted(have_out) != sorted(wanted_out):
        raise SmatError(
            f"{path.name} takes {have_in} -> {have_out}, but the pair's {role} takes {wanted_in} -> {wanted_out}"
        )
    return io


def pair_io(source: str | os.PathLike[str], precision: str = "float32") -> PairIO:
    """Both halves of the pair in folder ``source`` (or whose encoder file ``source`` is), checked to belong together
    (:func:`smat_deploy.pair.find_pair`), each as Triton will see it."""
    source = Path(source)
    if not source.exists():
        raise SmatError(f"engine not found: {source}")
    pair = checked_pair(source, precision if source.is_dir() else None)
    return PairIO(half_io(pair.encoder, "encoder"), half_io(pair.decoder, "decoder"), pair.weights_sha256)


def pair_models(io: PairIO, name: str = "smat", **options: object) -> dict[str, TritonModel]:
    """``{"encoder": <name>_encoder, "decoder": <name>_decoder}`` Triton models with the same batching options."""
    models = {role: triton_model(half, f"{name}_{role}", **options) for role, half in io.items()}  # type: ignore[arg-type]
    if models["encoder"].max_batch_size != models["decoder"].max_batch_size:
        raise SmatError(
            f"the encoder's batch is {'fixed' if not models['encoder'].dynamic_batching else 'dynamic'} but the "
            f"decoder's is {'fixed' if not models['decoder'].dynamic_batching else 'dynamic'}: "
            "make both halves with the same batch handling"
        )
    return models


def write_pair_repository(
    io: PairIO, models: dict[str, TritonModel], repo: str | os.PathLike[str]
) -> dict[str, dict[str, str | list[str]]]:
    """Both models of the pair into ``repo``, each like :func:`write_model_repository` (config, file, sidecar)."""
    return {role: write_model_repository(half, models[role], repo) for role, half in io.items()}
