"""Evaluation: how good and how fast each engine is, against the PyTorch reference.

- :mod:`smat_deploy.evaluation.precision`: every precision side by side on ONNX Runtime (speed, accuracy).
- :mod:`smat_deploy.evaluation.flops`: the model's analytic FLOP count.
- :mod:`smat_deploy.evaluation.bench`: the ``bench`` tool (latency, throughput, memory, resolution sweeps).
- :mod:`smat_deploy.evaluation.parity`: the ``parity`` tool (any engine against the reference on real photos).

The matting metrics themselves (SAD, MSE, MAD, Grad, Conn) are :mod:`smat_deploy.metrics`, which
every layer may use; they are re-exported here.
"""

from smat_deploy.metrics import METRIC_NAMES, conn, grad, mad, matting_metrics, mean_metrics, mse, sad

__all__ = ["METRIC_NAMES", "conn", "grad", "mad", "matting_metrics", "mean_metrics", "mse", "sad"]
