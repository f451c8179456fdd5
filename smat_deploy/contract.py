"""The SMat contract: what every engine takes and returns, the sizes it accepts, and the precisions with their gates.

Everything else in smat-deploy reads these facts from here; this module imports nothing from the
project (and nothing outside the standard library), so any layer, and a caller in another language
reading the sidecar manifest, sees the same contract.

- I/O: ``image [B,3,H,W]``, ``prompt [B,1,H,W]``, ``state [B,1]`` (float32, in [0, 1]) ->
  ``alpha [B,1,H,W]`` (float32, in [0, 1]).
- Sizes: ``H, W >= MIN_SIDE`` (one ViT patch of ``PATCH_SIZE``); padding to a multiple of the patch
  and cropping back happen inside the graph.
- Precisions: each artifact's name, file, and the gate it must meet against float32 (max and mean
  absolute alpha difference); ``parity`` uses the same figures as its default tolerances.
- The sidecar manifest: ``smat.onnx`` -> ``smat.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: DINOv2 ViT-S/14's patch side in pixels.
PATCH_SIZE = 14
#: The smallest image side SMat accepts: one patch.
MIN_SIDE = PATCH_SIZE
#: The largest side and batch the exported graph declares (its dynamic dimensions' bounds).
MAX_SIDE, MAX_BATCH = 8192, 256
#: The position-embedding grid's native size (37 x 14): where the reference needs no resize.
NATIVE_SIDE = 518
#: DINOv2 ViT-S/14's token width and attention heads: the sizes of the embedding and of attention's score tensors.
EMBED_WIDTH, ATTENTION_HEADS = 384, 6
#: The decoder works at this multiple of the token grid (``16h x 16w``, a little more than the padded photo).
DECODER_SCALE = 16

INPUTS: list[dict] = [
    {
        "name": "image",
        "dtype": "float32",
        "shape": ["batch", 3, "height", "width"],
        "range": [0.0, 1.0],
        "meaning": "RGB, channels first; normalisation and padding happen inside the graph",
    },
    {
        "name": "prompt",
        "dtype": "float32",
        "shape": ["batch", 1, "height", "width"],
        "range": [0.0, 1.0],
        "meaning": "1 where the user marked the target (points, boxes, scribbles, masks rasterised); "
        "all zeros for automatic mode",
    },
    {
        "name": "state",
        "dtype": "float32",
        "shape": ["batch", 1],
        "range": [0.0, 1.0],
        "meaning": "1 interactive, 0 automatic (per sample); interactive needs a non-empty prompt",
    },
]
OUTPUTS: list[dict] = [
    {
        "name": "alpha",
        "dtype": "float32",
        "shape": ["batch", 1, "height", "width"],
        "range": [0.0, 1.0],
        "meaning": "alpha matte at the input size (cropping happens inside the graph)",
    }
]
INPUT_NAMES = tuple(spec["name"] for spec in INPUTS)
OUTPUT_NAMES = tuple(spec["name"] for spec in OUTPUTS)
DIMENSIONS = {
    "batch": {"min": 1, "max": MAX_BATCH},
    "height": {"min": MIN_SIDE, "max": MAX_SIDE},
    "width": {"min": MIN_SIDE, "max": MAX_SIDE},
}

# -- the interactive pair: an encoder run once per photo, a decoder run once per prompt ----------------
#: The embedding: what the encoder writes and the decoder reads (besides prompt and state). ``grid_height``
#: and ``grid_width`` are the padded photo's size over ``PATCH_SIZE``.
EMBEDDING: list[dict] = [
    {
        "name": "features",
        "dtype": "float32",
        "shape": ["batch", EMBED_WIDTH, "grid_height", "grid_width"],
        "meaning": "DINOv2 patch tokens after the final LayerNorm, as a map",
    },
    {"name": "class_token", "dtype": "float32", "shape": ["batch", EMBED_WIDTH], "meaning": "DINOv2 class token"},
    {
        "name": "image16",
        "dtype": "float32",
        "shape": ["batch", 3, "16*grid_height", "16*grid_width"],
        "meaning": "normalised, padded image resized for the ConvStream (D0)",
    },
    {
        "name": "detail2",
        "dtype": "float32",
        "shape": ["batch", 96, "4*grid_height", "4*grid_width"],
        "meaning": "ConvStream stage 2 (D2)",
    },
    {
        "name": "fusion0",
        "dtype": "float32",
        "shape": ["batch", 256, "2*grid_height", "2*grid_width"],
        "meaning": "the first fusion convolution over ConvStream stage 3 and the upsampled features, "
        "before BatchNorm: its 576 prompt-independent input channels",
    },
]
EMBEDDING_NAMES = tuple(spec["name"] for spec in EMBEDDING)
#: Each half's I/O: the encoder takes the image; the decoder takes the embedding, prompt and state.
ENCODER_INPUTS, ENCODER_OUTPUTS = INPUTS[:1], EMBEDDING
DECODER_INPUTS, DECODER_OUTPUTS = EMBEDDING + INPUTS[1:], OUTPUTS
PAIR_ROLES = ("encoder", "decoder")
PAIR_IO = {"encoder": (ENCODER_INPUTS, ENCODER_OUTPUTS), "decoder": (DECODER_INPUTS, DECODER_OUTPUTS)}
PAIR_DIMENSIONS = {
    **DIMENSIONS,
    "grid_height": {"min": 1, "max": -(-MAX_SIDE // PATCH_SIZE) + 1},
    "grid_width": {"min": 1, "max": -(-MAX_SIDE // PATCH_SIZE) + 1},
}


def padded_grid(height: int, width: int) -> tuple[int, int]:
    """The token grid of one ``height x width`` photo under the official padding rule, quirk included: when either
    side is not a multiple of the patch, both sides grow to the next multiple (an aligned side by a whole patch)."""
    if height % PATCH_SIZE or width % PATCH_SIZE:
        return height // PATCH_SIZE + 1, width // PATCH_SIZE + 1
    return height // PATCH_SIZE, width // PATCH_SIZE


@dataclass(frozen=True)
class Role:
    """One graph of the contract: what it takes and gives, and the bounds of its dimensions.

    ``sized`` is the input whose height and width are the photo's (the engine's size limits apply to it).
    """

    name: str
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]
    dimensions: dict
    sized: str
    meaning: str

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec["name"] for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec["name"] for spec in self.outputs)

    @property
    def specs(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The role's inputs and outputs as :class:`TensorSpec`."""
        return tuple(_as_spec(s) for s in self.inputs), tuple(_as_spec(s) for s in self.outputs)

    def problems(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[str]:
        """Every way declared I/O differs from this role's (empty: it meets the contract).

        Static sizes where the contract has symbolic ones (a fixed-size export) are allowed; they become
        the engine's size limits.
        """
        expected_in, expected_out = self.specs
        return _spec_problems(inputs, expected_in, "input") + _spec_problems(outputs, expected_out, "output")


#: Every graph smat-deploy exports, by role: the whole model and the interactive pair's two halves. Manifests
#: record the role (``"role"``), every backend opens every role, and the pair's checks read this table.
ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("whole", tuple(INPUTS), tuple(OUTPUTS), DIMENSIONS, "image", "image, prompt, state -> alpha"),
        Role("encoder", tuple(ENCODER_INPUTS), tuple(ENCODER_OUTPUTS), PAIR_DIMENSIONS, "image", "image -> embedding"),
        Role(
            "decoder",
            tuple(DECODER_INPUTS),
            tuple(DECODER_OUTPUTS),
            PAIR_DIMENSIONS,
            "prompt",
            "embedding, prompt, state -> alpha",
        ),
    )
}


def manifest_role(manifest: dict) -> str | None:
    """The role a manifest gives its file: its ``role`` key, or (manifests written before it) the pair's role,
    else ``whole`` for a manifest without a pair section."""
    role = manifest.get("role")
    if role in ROLES:
        return str(role)
    pair = manifest.get("pair")
    if isinstance(pair, dict):
        found = pair.get("role")
        return str(found) if found in PAIR_ROLES else None
    return "whole" if manifest else None


#: Prompt kinds that inputs are made with (calibration, gates, parity, benchmarks): "none" is automatic mode.
PROMPT_KINDS = ("none", "point", "box", "scribble", "mask")


#: Element types, one row each: the contract's name, then how ONNX (``TensorProto`` number), ONNX Runtime,
#: OpenVINO, TensorRT (``DataType`` member), TensorRT's ONNX support matrix and Triton name it (None: no such
#: type there). Every backend, the support-matrix check and the Triton configs read types through this table.
DTYPE_COLUMNS = ("onnx", "onnxruntime", "openvino", "tensorrt", "support_matrix", "triton")
_DTYPE_ROWS = (
    ("float32", 1, "tensor(float)", "f32", "FLOAT", "FP32", "TYPE_FP32"),
    ("float16", 10, "tensor(float16)", "f16", "HALF", "FP16", "TYPE_FP16"),
    ("bfloat16", 16, "tensor(bfloat16)", "bf16", "BF16", "BF16", "TYPE_BF16"),
    ("float64", 11, "tensor(double)", "f64", None, "DOUBLE", "TYPE_FP64"),
    ("int8", 3, "tensor(int8)", "i8", "INT8", "INT8", "TYPE_INT8"),
    ("uint8", 2, "tensor(uint8)", "u8", "UINT8", "UINT8", "TYPE_UINT8"),
    ("int16", 5, "tensor(int16)", "i16", None, "INT16", "TYPE_INT16"),
    ("uint16", 4, "tensor(uint16)", "u16", None, "UINT16", "TYPE_UINT16"),
    ("int32", 6, "tensor(int32)", "i32", "INT32", "INT32", "TYPE_INT32"),
    ("uint32", 12, "tensor(uint32)", "u32", None, "UINT32", "TYPE_UINT32"),
    ("int64", 7, "tensor(int64)", "i64", "INT64", "INT64", "TYPE_INT64"),
    ("uint64", 13, "tensor(uint64)", "u64", None, "UINT64", "TYPE_UINT64"),
    ("bool", 9, "tensor(bool)", "boolean", "BOOL", "BOOL", "TYPE_BOOL"),
    ("string", 8, "tensor(string)", "string", None, "STRING", "TYPE_STRING"),
    ("int4", 22, "tensor(int4)", "i4", "INT4", "INT4", None),
    ("float8", 17, "tensor(float8e4m3fn)", "f8e4m3", "FP8", "FP8", None),
    ("float4", 23, "tensor(float4e2m1)", "f4e2m1", "FP4", "FP4", None),
)
DTYPES: dict[str, dict[str, int | str | None]] = {
    row[0]: dict(zip(DTYPE_COLUMNS, row[1:], strict=True)) for row in _DTYPE_ROWS
}


def dtype_name(column: str, native: object) -> str:
    """The contract's name of a type as ``column`` names it (``("onnxruntime", "tensor(float)")`` -> ``float32``);
    a type the table does not hold keeps its own name."""
    for name, names in DTYPES.items():
        if names[column] == native:
            return name
    return str(native)


def dtype_in(column: str, name: str) -> int | str | None:
    """How ``column`` names the contract's type ``name`` (None: not there, or not a type the table holds)."""
    return DTYPES.get(name, {}).get(column)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as a model file declares it: static sizes are ints, dynamic ones names or None."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _as_spec(spec: dict) -> TensorSpec:
    return TensorSpec(spec["name"], spec["dtype"], tuple(spec["shape"]))


CONTRACT_INPUTS = tuple(_as_spec(s) for s in INPUTS)
CONTRACT_OUTPUTS = tuple(_as_spec(s) for s in OUTPUTS)


def _spec_problems(found: Sequence[TensorSpec], expected: Sequence[TensorSpec], role: str) -> list[str]:
    problems = []
    by_name = {spec.name: spec for spec in found}
    wanted = [spec.name for spec in expected]
    if missing := [name for name in wanted if name not in by_name]:
        problems.append(f"missing {role} {', '.join(missing)}")
    if extra := [spec.name for spec in found if spec.name not in wanted]:
        problems.append(f"unexpected {role} {', '.join(extra)}")
    for want in expected:
        have = by_name.get(want.name)
        if have is None:
            continue
        if have.dtype != want.dtype:
            problems.append(f"{want.name} is {have.dtype}, expected {want.dtype}")
        if len(have.shape) != len(want.shape):
            problems.append(f"{want.name} has rank {len(have.shape)}, expected {len(want.shape)} {list(want.shape)}")
            continue
        for axis, (dim, wanted_dim) in enumerate(zip(have.shape, want.shape, strict=True)):
            if isinstance(wanted_dim, int) and isinstance(dim, int) and dim != wanted_dim:
                problems.append(f"{want.name} axis {axis} is {dim}, expected {wanted_dim}")
    return problems


def contract_problems(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], role: str = "whole") -> list[str]:
    """Every way declared I/O differs from ``role``'s (``whole``: ``image, prompt, state -> alpha``); empty: it
    meets the contract. See :meth:`Role.problems`."""
    return ROLES[role].problems(inputs, outputs)


@dataclass(frozen=True)
class Gate:
    """The most an artifact's alpha may differ from float32's: ``max_abs`` per pixel, ``mean_abs`` on average."""

    max_abs: float
    mean_abs: float


@dataclass(frozen=True)
class Precision:
    """One artifact kind: its name (as manifests record it), default file, gate, and whether TensorRT can build it."""

    name: str
    file: str
    gate: Gate
    summary: str
    #: Uses ONNX Runtime's own operators or kernels: no TensorRT engine is built from it.
    cpu_only: bool = False


#: The export's parity bound against the PyTorch reference (max absolute alpha difference).
EXPORT_GATE = Gate(max_abs=1e-4, mean_abs=1e-5)
#: FP16 (``export --fp16``) against float32 on the calibration set.
FP16_GATE = Gate(max_abs=2e-2, mean_abs=1e-3)
#: INT8 against float32 on held-out images (``export --int8``), with the least share of weight FLOPs in int8.
INT8_GATE = Gate(max_abs=0.05, mean_abs=5e-3)
MIN_INT8_SHARE = 0.9

PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("float32", "smat.onnx", EXPORT_GATE, "the export: float32, portable ONNX"),
        Precision(
            "float32_cpu",
            "smat_cpu.onnx",
            EXPORT_GATE,
            "float32 with ONNX Runtime's fused CPU kernels (the same arithmetic)",
            cpu_only=True,
        ),
        Precision("fp16", "smat_fp16.onnx", FP16_GATE, "float16 with fp32 islands (Model Optimizer AutoCast)"),
        Precision("int8", "smat_int8.onnx", INT8_GATE, "INT8 Q/DQ for TensorRT (Model Optimizer)"),
        Precision("int8_cpu", "smat_int8_cpu.onnx", INT8_GATE, "INT8 for ONNX Runtime's CPU kernels", cpu_only=True),
    )
}
#: Other spellings found in manifests and on command lines, and the precision each means.
PRECISION_ALIASES = {"float16": "fp16", "cpu": "float32_cpu", "fp32": "float32"}


def canonical_precision(name: str) -> str:
    """A precision's one name (``float16`` -> ``fp16``); unknown names come back unchanged."""
    return PRECISION_ALIASES.get(name, name)


def gate_for(precision: str) -> Gate | None:
    """The gate an artifact of ``precision`` met at export, or None for a precision smat-deploy does not make."""
    found = PRECISIONS.get(canonical_precision(precision))
    return found.gate if found else None


def pair_file(role: str, precision: str = "float32") -> str:
    """The file of one half of the interactive pair: ``("encoder", "fp16")`` -> ``smat_encoder_fp16.onnx``."""
    if role not in PAIR_ROLES:
        raise ValueError(f"unknown pair role {role!r}: expected one of {', '.join(PAIR_ROLES)}")
    whole = PRECISIONS[canonical_precision(precision)].file  # smat.onnx, smat_fp16.onnx, ...
    return f"smat_{role}{Path(whole).stem[len('smat') :]}.onnx"


def manifest_path_for(model_path: str | os.PathLike[str]) -> Path:
    """The sidecar manifest of a model file: ``smat.onnx`` -> ``smat.json``."""
    return Path(model_path).with_suffix(".json")


def read_manifest(path: str | os.PathLike[str]) -> dict | None:
    """A sidecar manifest's content, or None when there is none (a malformed one raises ``ValueError``)."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
