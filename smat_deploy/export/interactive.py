"""The interactive pair: ``smat_encoder.onnx`` (once per photo) and ``smat_decoder.onnx`` (once per prompt).

Like segment-anything's split, the encoder holds everything the prompt never reaches (the DINOv2
backbone and the ConvStream) and the decoder the rest (candidate token, prompt cross-attention,
similarity map, fusion stages, matting head). Both halves reuse the reference model's own steps
(:meth:`SMat.embed_padded`, :meth:`SMat.decode_padded`), so the pair computes what ``smat.onnx``
computes; normalisation and padding stay in the encoder, cropping in the decoder, and the decoder
reads the photo's size from the prompt.

Each half is verified against PyTorch, and the pair against the whole reference model, before
either file replaces an older one. Both manifests carry the same ``weights_sha256`` and name their
partner, so a runtime can refuse an encoder and a decoder exported from different weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smat_deploy._ort import session as ort_session
from smat_deploy.contract import (
    EMBEDDING,
    EMBEDDING_NAMES,
    EXPORT_GATE,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PAIR_DIMENSIONS,
    PATCH_SIZE,
    pair_file,
)
from smat_deploy.data.cases import ParityCase, standard_cases
from smat_deploy.errors import CheckFailed
from smat_deploy.export.onnx_export import DEFAULT_OPSET, ExportResult, dynamic_dims, export_module
from smat_deploy.export.parity import ParityReport
from smat_deploy.export.sequence import Graph, export_graphs
from smat_deploy.model import SMat, weights_digest
from smat_deploy.model.pair import first_fusion_fixed_part, pair_embedding

ENCODER_NAME, DECODER_NAME = pair_file("encoder"), pair_file("decoder")
DECODER_INPUT_NAMES = (*EMBEDDING_NAMES, *INPUT_NAMES[1:])


class GraphEncoder(nn.Module):
    """``image [B,3,H,W] -> features, class_token, image16, detail2, fusion0`` (the contract's embedding)."""

    def __init__(self, model: SMat) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        padded = self.model.pad((image - self.model.pixel_mean) / self.model.pixel_std)
        features, class_token, image16, detail2, detail3 = self.model.embed_padded(padded, form="graph")
        return features, class_token, image16, detail2, first_fusion_fixed_part(self.model, features, detail3)


class GraphDecoder(nn.Module):
    """``embedding, prompt [B,1,H,W], state [B,1] -> alpha [B,1,H,W]``: :meth:`SMat.decode_padded`'s steps, with
    the first fusion convolution finished from ``fusion0`` (:func:`first_fusion_fixed_part`).

    The prompt is padded to the embedding's grid (``14 * grid``), which is the official padding of
    the photo the embedding was made from; the runtime checks the prompt has that photo's size.
    """

    def __init__(self, model: SMat) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        features: torch.Tensor,
        class_token: torch.Tensor,
        image16: torch.Tensor,
        detail2: torch.Tensor,
        fusion0: torch.Tensor,
        prompt: torch.Tensor,
        state: torch.Tensor,
    ) -> torch.Tensor:
        model, decoder = self.model, self.model.decoder
        height, width = prompt.shape[-2:]
        batch = features.shape[0]
        grid_h, grid_w = features.shape[-2:]
        padded = F.pad(prompt, (0, PATCH_SIZE * grid_w - width, 0, PATCH_SIZE * grid_h - height))
        tokens = features.flatten(2).transpose(1, 2)
        candidate = model.candidate_token(tokens, class_token, padded, state)
        candidate = model.prompt_cross_attn(candidate, tokens)
        similarity = model.similarity_map(candidate, tokens).reshape(batch, 1, grid_h, grid_w)
        first = decoder.fusion_blks[0].conv
        upsampled = F.interpolate(similarity, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = fusion0 + F.conv2d(
            upsampled, first.conv.weight[:, -1:], stride=first.conv.stride, padding=first.conv.padding
        )
        x = first.relu(first.bn(x))
        detail1 = decoder.convstream.convs[0](image16)
        for block, detail in zip(decoder.fusion_blks[1:], (detail2, detail1, image16), strict=True):
            x = block(x, detail)
        alpha = decoder.alpha_from(x, padded.shape[-2:], graph=True)
        return alpha[:, :, :height, :width]


def _example_image() -> torch.Tensor:
    # Not a multiple of 14, H != W and batch > 1 keep every dimension symbolic.
    return torch.rand(2, 3, 100, 130, generator=torch.Generator().manual_seed(0))


def export_encoder(model: SMat, output: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET) -> ExportResult:
    batch, height, width = dynamic_dims()
    return export_module(
        GraphEncoder(model),
        (_example_image(),),
        output,
        input_names=["image"],
        output_names=list(EMBEDDING_NAMES),
        dynamic_shapes={"image": {0: batch, 2: height, 3: width}},
        output_dims={spec["name"]: spec["shape"] for spec in EMBEDDING},
        doc="SMat encoder (once per photo): image -> embedding. See the sidecar JSON.",
        opset=opset,
    )


def export_decoder(model: SMat, output: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET) -> ExportResult:
    batch, height, width = dynamic_dims()
    grid_h = torch.export.Dim("grid_height", min=1, max=EMBEDDING_GRID_MAX)
    grid_w = torch.export.Dim("grid_width", min=1, max=EMBEDDING_GRID_MAX)
    image = _example_image()
    with torch.no_grad():
        embedding = GraphEncoder(model).eval()(image)
    prompt = torch.zeros(2, 1, *image.shape[-2:])
    prompt[1, :, 20:60, 30:80] = 1
    state = torch.tensor([[0.0], [1.0]])
    scaled = {"features": 1, "image16": 16, "detail2": 4, "fusion0": 2}
    shapes: dict[str, dict] = {
        name: {0: batch, 2: factor * grid_h, 3: factor * grid_w} for name, factor in scaled.items()
    }
    shapes |= {"class_token": {0: batch}, "prompt": {0: batch, 2: height, 3: width}, "state": {0: batch}}
    return export_module(
        GraphDecoder(model),
        (*embedding, prompt, state),
        output,
        input_names=list(DECODER_INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={name: shapes[name] for name in DECODER_INPUT_NAMES},
        output_dims={"alpha": ["batch", 1, "height", "width"]},
        doc="SMat decoder (once per prompt): embedding, prompt, state -> alpha. See the sidecar JSON.",
        opset=opset,
    )


#: The largest token grid side the decoder declares: a MAX_SIDE photo after the padding quirk.
EMBEDDING_GRID_MAX = PAIR_DIMENSIONS["grid_height"]["max"]


class PairParity(ParityReport):
    """Each half against PyTorch, and the pair against the whole reference model, case by case."""

    MAX_KEY = "pair_max_abs"


def run_pair_parity(
    encoder_path: str | os.PathLike[str],
    decoder_path: str | os.PathLike[str],
    model: SMat,
    cases: list[ParityCase] | None = None,
    tolerance: float = EXPORT_GATE.max_abs,
) -> PairParity:
    """Per case: the encoder's embedding against :meth:`SMat.embed` (relative to each tensor's scale), the
    decoder on PyTorch's embedding against :meth:`SMat.decode`, and encoder + decoder against ``model(...)``.
    """
    encoder, decoder = ort_session(encoder_path), ort_session(decoder_path)
    report = PairParity(tolerance)
    for case in cases if cases is not None else standard_cases():
        image, prompt, state = (torch.from_numpy(a) for a in (case.image, case.prompt, case.state))
        with torch.inference_mode():
            reference = model.embed(image)
            decoded = model.decode(reference, prompt, state).numpy()
            whole = model(image, prompt, state).numpy()
        exported = dict(zip(EMBEDDING_NAMES, encoder.run(list(EMBEDDING_NAMES), {"image": case.image}), strict=True))
        with torch.inference_mode():
            reference_pair = pair_embedding(model, reference)
        embed_rel = max(
            float(np.abs(exported[name] - t.numpy()).max() / max(1.0, float(t.abs().max())))
            for name, t in zip(EMBEDDING_NAMES, reference_pair, strict=True)
        )
        torch_feed = {name: t.contiguous().numpy() for name, t in zip(EMBEDDING_NAMES, reference_pair, strict=True)}
        extra = {"prompt": case.prompt, "state": case.state}
        decoder_alpha = decoder.run(["alpha"], torch_feed | extra)[0]
        pair_alpha = decoder.run(["alpha"], exported | extra)[0]
        decoder_max = float(np.abs(decoder_alpha - decoded).max())
        pair_max = float(np.abs(pair_alpha.astype(np.float64) - whole).max())
        batch, _, height, width = case.image.shape
        report.rows.append(
            {
                "case": case.name,
                "batch": batch,
                "size": f"{height}x{width}",
                "prompts": ",".join(case.kinds),
                "encoder_rel_max": embed_rel,
                "decoder_max_abs": decoder_max,
                "pair_max_abs": pair_max,
                "pair_mean_abs": float(np.abs(pair_alpha.astype(np.float64) - whole).mean()),
                "pass": bool(max(embed_rel, decoder_max, pair_max) <= tolerance and pair_alpha.shape == whole.shape),
            }
        )
    return report


@dataclass
class PairReport:
    encoder: Path
    decoder: Path
    manifests: tuple[Path, Path]
    seconds: float
    sizes: tuple[int, int]
    parity: PairParity | None
    golden: dict[str, tuple[Path, Path]] | None = None

    def as_dict(self) -> dict:
        return {
            "encoder": str(self.encoder),
            "decoder": str(self.decoder),
            "manifests": [str(p) for p in self.manifests],
            "export_seconds": round(self.seconds, 2),
            "size_mb": [round(size / 1e6, 1) for size in self.sizes],
            "parity": None if self.parity is None else self.parity.as_dict(),
            "golden": None if self.golden is None else {k: [str(p) for p in v] for k, v in self.golden.items()},
        }


def export_pair(
    model: SMat,
    output_dir: Path,
    *,
    checkpoint: str | os.PathLike[str] | None,
    weights: str,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = EXPORT_GATE.max_abs,
    golden_dir: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> PairReport:
    """Write the verified encoder/decoder pair and their manifests into ``output_dir``.

    The one export sequence (:func:`smat_deploy.export.sequence.export_graphs`) makes and checks both files
    under temporary names; only when both pass do they replace older files, so a failure leaves the previous
    pair (or none) in place, never half a pair.
    """
    parity: PairParity | None = None

    def verify(paths: dict[str, Path]) -> dict | None:
        nonlocal parity
        if not check:
            return None
        log("checking the pair against the PyTorch reference (each half, and encoder + decoder vs the whole model)")
        parity = run_pair_parity(paths["encoder"], paths["decoder"], model, standard_cases(), tolerance)
        if not parity.passed:
            worst = max(parity.rows, key=_worst_difference)
            raise CheckFailed(
                f"interactive pair parity failed in case {worst['case']}: encoder {worst['encoder_rel_max']:.1e} "
                f"(relative), decoder {worst['decoder_max_abs']:.1e}, pair {worst['pair_max_abs']:.1e} > "
                f"{tolerance:g}; nothing was replaced"
            )
        return parity.as_dict()

    log(f"exporting the interactive pair: {ENCODER_NAME} (once per photo) and {DECODER_NAME} (once per prompt)")
    digest = weights_digest(model)
    graphs = [
        Graph(
            role,
            name,
            writer,
            _layer_norms(model, role),
            {"pair": {"role": role, "partner": partner, "weights_sha256": digest}},
        )
        for role, name, writer, partner in (
            ("encoder", ENCODER_NAME, _write_encoder, DECODER_NAME),
            ("decoder", DECODER_NAME, _write_decoder, ENCODER_NAME),
        )
    ]
    exported = export_graphs(
        model, graphs, output_dir, checkpoint=checkpoint, weights=weights, opset=opset, verify=verify, log=log
    )
    seconds = sum(item.result.seconds for item in exported.values())
    log(f"exported the pair in {seconds:.1f}s")
    golden = None
    if golden_dir is not None:
        from smat_deploy.export.golden import save_pair_golden

        golden = save_pair_golden(golden_dir, model, standard_cases())
    encoder, decoder = exported["encoder"], exported["decoder"]
    return PairReport(
        encoder.path,
        decoder.path,
        (encoder.manifest_path, decoder.manifest_path),
        seconds,
        (encoder.path.stat().st_size, decoder.path.stat().st_size),
        parity,
        golden,
    )


def _write_encoder(model: SMat, output: Path, opset: int) -> ExportResult:
    return export_encoder(model, output, opset=opset)


def _write_decoder(model: SMat, output: Path, opset: int) -> ExportResult:
    return export_decoder(model, output, opset=opset)


def _worst_difference(row: dict) -> float:
    return max(row["encoder_rel_max"], row["decoder_max_abs"], row["pair_max_abs"])


def _layer_norms(model: SMat, role: str) -> int:
    """LayerNorms each half keeps as single nodes: the backbone's (encoder), the prompt layer's (decoder)."""
    part = model.backbone if role == "encoder" else model.prompt_cross_attn
    return sum(isinstance(m, nn.LayerNorm) for m in part.modules())
