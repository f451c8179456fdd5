"""Exported graph against the PyTorch reference: the standard cases (:mod:`smat_deploy.data.cases`) and their report.

The cases cover what the export must get right: 518x518 (the native position grid), sizes that are
not multiples of 14, H != W (tall and wide), a size where only one side is a multiple of 14 (the
padding quirk), the 14x14 minimum, batch 1 and a batch of 3 mixing automatic and interactive
samples, and every prompt kind. Images are synthetic composites, so nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smat_deploy._ort import session as ort_session
from smat_deploy.contract import EXPORT_GATE
from smat_deploy.data.cases import ParityCase, standard_cases
from smat_deploy.model import SMat

#: The export's parity bound (max absolute alpha difference): the float32 gate of the contract.
DEFAULT_TOLERANCE = EXPORT_GATE.max_abs


@dataclass
class ParityReport:
    tolerance: float
    rows: list[dict] = field(default_factory=list)
    #: The row field whose largest value is the report's ``max_abs``.
    MAX_KEY = "max_abs"

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row["pass"] for row in self.rows)

    @property
    def max_abs(self) -> float:
        return max((row[self.MAX_KEY] for row in self.rows), default=float("nan"))

    def as_dict(self) -> dict:
        return {"tolerance": self.tolerance, "passed": self.passed, "max_abs": self.max_abs, "cases": self.rows}


def run_parity(
    onnx_path: str | os.PathLike[str] | Path,
    model: SMat,
    cases: list[ParityCase] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Run every case through ONNX Runtime (CPU) and the reference; compare the alphas."""
    session = ort_session(onnx_path)
    report = ParityReport(tolerance)
    for case in cases if cases is not None else standard_cases():
        exported = session.run(["alpha"], case.feed())[0]
        with torch.inference_mode():
            reference = model(*(torch.from_numpy(a) for a in (case.image, case.prompt, case.state))).numpy()
        diff = np.abs(exported.astype(np.float64) - reference)
        batch, _, height, width = case.image.shape
        report.rows.append(
            {
                "case": case.name,
                "batch": batch,
                "size": f"{height}x{width}",
                "prompts": ",".join(case.kinds),
                "max_abs": float(diff.max()),
                "mean_abs": float(diff.mean()),
                "alpha_std": float(reference.std()),
                "pass": bool(diff.max() <= tolerance and exported.shape == reference.shape),
            }
        )
    return report
