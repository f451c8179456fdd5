"""Serving SMat from NVIDIA Triton Inference Server.

- :mod:`smat_deploy.serve.model_repository`: a Triton model repository (``config.pbtxt`` + ``1/model.onnx`` or
  ``1/model.plan``) generated from an engine's real inputs and outputs (``smat-deploy triton``).
- :mod:`smat_deploy.serve.server`: a real Triton server hosting any smat-deploy engine through NVIDIA PyTriton
  (``smat-deploy serve``), with :mod:`smat_deploy.serve.batcher` batching same-size requests.
- :mod:`smat_deploy.serve.environment`: what PyTriton's bundled server needs from this Python (``libpython``, a
  numpy 1 environment for its model stub), set up automatically.
- :mod:`smat_deploy.serve.loadtest`: concurrent KServe v2 clients measuring throughput and latency.

Nothing here is imported by ``import smat_deploy``; PyTriton and tritonclient load only when these are used.
"""
