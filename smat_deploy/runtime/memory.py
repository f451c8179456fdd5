"""How much memory one SMat engine call needs, predicted from the contract's sizes before it runs.

SMat's working memory has two peaks, one after the other:

- **the backbone's**: DINOv2 attention over ``T = h * w`` tokens (``h x w`` is the padded token grid,
  :func:`~smat_deploy.contract.padded_grid`). A runtime that runs attention as plain MatMul and Softmax
  holds the score tensor of all ``6`` heads, ``6 (T + 1)^2`` float32 values per image, and usually the
  softmax's output beside it: 90 GB at 4000x3000 (61k tokens). A fused, flash-style kernel (PyTorch's
  ``scaled_dot_product_attention``, ONNX Runtime's ``MultiHeadAttention``, OpenVINO's own SDPA fusion,
  TensorRT's fused attention) never holds it, and the backbone costs a few MB per thousand tokens.
  Beside attention live the ConvStream's detail maps and the inputs' copies.
- **the decoder's**: the fusion stages and the matting head work at ``16h x 16w`` (a little more than
  the photo), on up to 64 upsampled channels plus their concatenation and the convolutions' outputs.
  It grows with the pixel count: about 200 float32 channels at that resolution, 12 GB at 4000x3000.

So a call needs ``batch x max(backbone, decoder) x allocator + fixed``, where each phase is a count of
buffers of a known size (score tensors of ``6 (T+1)^2`` values, channels of ``256 T`` values) and the
counts are what a runtime keeps alive at once. Those counts differ between runtimes (in-place
operators, fusions, when buffers are freed) and are calibrated once per runtime: each
:class:`MemoryProfile` below says what it was measured on. ``smat-deploy bench --sizes`` prints the
prediction beside the measured peak; docs/photo-sizes.md records both and the command.

Nothing here imports numpy or a backend: the figures are plain arithmetic on the contract.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from smat_deploy.contract import ATTENTION_HEADS, DECODER_SCALE, EMBEDDING, padded_grid

MB = 1e6
#: Which part of the model one call runs: the whole model, the pair's encoder (embed) or decoder (click).
ROLES = ("whole", "encoder", "decoder")


@dataclass(frozen=True)
class CallShape:
    """The sizes one engine call works on, derived from the photo's size by the model's padding rule."""

    batch: int
    height: int
    width: int

    @property
    def grid(self) -> tuple[int, int]:
        return padded_grid(self.height, self.width)

    @property
    def tokens(self) -> int:
        grid_height, grid_width = self.grid
        return grid_height * grid_width

    @property
    def score_bytes(self) -> int:
        """One image's attention scores for all heads, float32: ``heads x (T+1)^2 x 4`` (the class token included)."""
        return ATTENTION_HEADS * (self.tokens + 1) ** 2 * 4

    @property
    def channel_bytes(self) -> int:
        """One float32 channel at the decoder's resolution, ``16h x 16w``."""
        return DECODER_SCALE * DECODER_SCALE * self.tokens * 4


@dataclass(frozen=True)
class MemoryEstimate:
    """The predicted peak working memory of one call, in MB (10^6 bytes), and where it goes."""

    total_mb: float
    backbone_mb: float  # the backbone's peak, attention included (per batch)
    attention_mb: float  # of which attention's score tensors
    decoder_mb: float  # the decoder's peak (per batch)
    fixed_mb: float
    profile: str
    role: str

    def as_dict(self) -> dict:
        return {key: round(value, 1) if isinstance(value, float) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class MemoryProfile:
    """What one runtime keeps alive at each peak of an SMat call, in buffers of the contract's sizes.

    - ``attention_buffers``: float32 score tensors of all heads (``6 (T+1)^2`` values) alive at once
      (0: attention runs fused and never holds them);
    - ``backbone_channels``: float32 channels of ``16h x 16w`` alive beside attention (ConvStream maps,
      input copies);
    - ``decoder_channels``: the same at the decoder's peak;
    - ``allocator``: what the runtime's allocator holds over what is alive (ONNX Runtime's arena: between
      0.97x and 1.43x of the live tensors from one size to the next in our measurements, 1.15x in between);
    - ``fixed_mb``: per call, whatever the size;
    - ``measured``: what the coefficients were calibrated on.
    """

    name: str
    attention_buffers: float
    backbone_channels: float
    decoder_channels: float
    fixed_mb: float
    allocator: float = 1.0
    measured: str = ""

    def estimate(self, batch: int, height: int, width: int, role: str = "whole") -> MemoryEstimate:
        """The peak of one call on a ``batch x height x width`` input; ``role`` picks the phases the call runs."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        shape = CallShape(batch, height, width)
        attention = self.attention_buffers * shape.score_bytes
        backbone = attention + self.backbone_channels * shape.channel_bytes
        decoder = self.decoder_channels * shape.channel_bytes
        per_image = {"whole": max(backbone, decoder), "encoder": backbone, "decoder": decoder}[role]
        total = batch * per_image * self.allocator + self.fixed_mb * MB
        return MemoryEstimate(
            total_mb=total / MB,
            backbone_mb=backbone / MB,
            attention_mb=attention / MB,
            decoder_mb=decoder / MB,
            fixed_mb=self.fixed_mb,
            profile=self.name,
            role=role,
        )


def _dimension(value: int | str, batch: int, grid: tuple[int, int]) -> int:
    """One dimension of a contract shape: ``batch``, ``grid_height``, ``16*grid_width`` or a number."""
    if isinstance(value, int):
        return value
    factor, _, name = value.rpartition("*")
    sizes = {"batch": batch, "grid_height": grid[0], "grid_width": grid[1]}
    return (int(factor) if factor else 1) * sizes[name]


def embedding_bytes(batch: int, height: int, width: int) -> int:
    """What one embedding (the pair's encoder outputs, :data:`~smat_deploy.contract.EMBEDDING`) holds, float32."""
    grid = padded_grid(height, width)
    total = 0
    for spec in EMBEDDING:
        count = 1
        for dim in spec["shape"]:
            count *= _dimension(dim, batch, grid)
        total += count * 4
    return total


def pair_estimate(profile: MemoryProfile, batch: int, height: int, width: int) -> MemoryEstimate:
    """An interactive pair's peak for one photo: the encoder's, or the embedding held while a click runs, if larger."""
    encoder = profile.estimate(batch, height, width, "encoder")
    decoder = profile.estimate(batch, height, width, "decoder")
    held = embedding_bytes(batch, height, width) / MB
    total = max(encoder.total_mb, held + decoder.total_mb)
    return MemoryEstimate(
        total_mb=total,
        backbone_mb=encoder.backbone_mb,
        attention_mb=encoder.attention_mb,
        decoder_mb=decoder.decoder_mb,
        fixed_mb=profile.fixed_mb,
        profile=profile.name,
        role="pair",
    )


# Calibrated on a 2-core Intel Xeon (24 GB), float32: each figure is the peak resident memory of one fresh process's
# first call above its resident memory just before the call, at 11 sizes from 56x56 to 1792x1792 and batches 1 to 4,
# then checked at 4 sizes measured afterwards (docs/photo-sizes.md has the table and the command). Every profile is
# within 20 % of every measurement above 500 MB; below that the fixed part dominates and the prediction errs high.
PROFILES: dict[str, MemoryProfile] = {
    profile.name: profile
    for profile in (
        MemoryProfile(
            "onnxruntime",
            attention_buffers=2.0,
            backbone_channels=76.0,
            decoder_channels=200.0,
            fixed_mb=60.0,
            allocator=1.15,
            measured="ONNX Runtime (CPU, its arena on) on smat.onnx: scores and softmax output of all heads held",
        ),
        MemoryProfile(
            "onnxruntime-fused",
            attention_buffers=0.0,
            backbone_channels=48.0,
            decoder_channels=195.0,
            fixed_mb=60.0,
            allocator=1.15,
            measured="ONNX Runtime (CPU, its arena on) on smat_cpu.onnx: com.microsoft.MultiHeadAttention (flash)",
        ),
        MemoryProfile(
            "openvino",
            attention_buffers=0.0,
            backbone_channels=48.0,
            decoder_channels=200.0,
            fixed_mb=60.0,
            measured="OpenVINO 2026 (CPU) on smat.onnx: OpenVINO fuses attention into its own SDPA",
        ),
        MemoryProfile(
            "torch",
            attention_buffers=0.0,
            backbone_channels=40.0,
            decoder_channels=295.0,
            fixed_mb=60.0,
            measured="PyTorch eager (CPU): scaled_dot_product_attention (flash); eager decoder tensors",
        ),
    )
}
#: The interactive pair's two graphs (``smat_encoder*.onnx`` + ``smat_decoder*.onnx``, or ``SMat.embed`` +
#: ``SMat.decode``): role ``encoder`` is one embed, ``decoder`` one click, each its own graph and allocation pattern.
PAIR_PROFILES: dict[str, MemoryProfile] = {
    profile.name: profile
    for profile in (
        MemoryProfile(
            "onnxruntime",
            attention_buffers=2.0,
            backbone_channels=76.0,
            decoder_channels=215.0,
            fixed_mb=40.0,
            measured="ONNX Runtime (CPU, arena on) on smat_encoder.onnx + smat_decoder.onnx",
        ),
        MemoryProfile(
            "onnxruntime-fused",
            attention_buffers=0.0,
            backbone_channels=48.0,
            decoder_channels=215.0,
            fixed_mb=60.0,
            measured="ONNX Runtime (CPU, arena on) on smat_encoder_cpu.onnx + smat_decoder_cpu.onnx",
        ),
        MemoryProfile(
            "openvino",
            attention_buffers=0.0,
            backbone_channels=92.0,
            decoder_channels=200.0,
            fixed_mb=40.0,
            measured="OpenVINO 2026 (CPU) on smat_encoder.onnx + smat_decoder.onnx",
        ),
        MemoryProfile(
            "torch",
            attention_buffers=0.0,
            backbone_channels=40.0,
            decoder_channels=268.0,
            fixed_mb=60.0,
            measured="PyTorch eager (CPU): SMat.embed + SMat.decode",
        ),
    )
}
#: For a runtime nobody calibrated: attention materialised, the largest decoder seen.
CONSERVATIVE = MemoryProfile(
    "conservative",
    attention_buffers=2.0,
    backbone_channels=80.0,
    decoder_channels=300.0,
    fixed_mb=100.0,
    allocator=1.25,
    measured="no calibration: the largest of the measured runtimes' figures",
)


def available_memory_mb() -> float:
    """Memory this process can still take without swapping or being killed, in MB.

    Linux's ``MemAvailable`` (``/proc/meminfo``), lowered to what the process's cgroup (a container's
    memory limit) still allows; elsewhere, free physical memory as the OS reports it.
    """
    available = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None:
        available = min(available, limit) if available is not None else limit
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 1024**3  # nothing to read: assume a small machine
    return available / MB


def _meminfo_available() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room(v2: Path = Path("/sys/fs/cgroup"), v1: Path = Path("/sys/fs/cgroup/memory")) -> float | None:
    """Bytes the process's cgroup still allows (cgroup v2 ``memory.max - memory.current``, or v1's), None: no limit."""
    for limit_file, usage_file in (
        (v2 / "memory.max", v2 / "memory.current"),
        (v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes"),
    ):
        try:
            text = limit_file.read_text(encoding="ascii").strip()
            if text == "max":
                return None
            limit = float(text)
            if limit >= 2**60:  # cgroup v1's "no limit"
                return None
            return max(0.0, limit - float(usage_file.read_text(encoding="ascii").strip()))
        except (OSError, ValueError):
            continue
    return None


def resident_mb() -> float:
    """This process's resident memory now (``/proc/self/status`` ``VmRSS``), in MB; 0 where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def peak_resident_mb() -> float:
    """This process's peak resident memory so far (``getrusage`` ``ru_maxrss``: KiB on Linux, bytes on macOS), in MB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB
