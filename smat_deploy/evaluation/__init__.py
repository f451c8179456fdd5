"""Evaluation: how good and how fast a matte is. Matting metrics now; parity and benchmarks join them here."""

from smat_deploy.evaluation.metrics import METRIC_NAMES, conn, grad, mad, matting_metrics, mean_metrics, mse, sad

__all__ = ["METRIC_NAMES", "conn", "grad", "mad", "matting_metrics", "mean_metrics", "mse", "sad"]
