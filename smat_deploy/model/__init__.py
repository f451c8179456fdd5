"""The PyTorch reference model: DINOv2 backbone, prompt cross-attention, detail-capture decoder."""

from smat_deploy.model.checkpoint import describe_weights, load_model, save_checkpoint, weights_digest
from smat_deploy.model.predict import predict_alpha
from smat_deploy.model.smat import Embedding, SMat, SMatConfig, padded_size, state_from_prompt

__all__ = [
    "Embedding",
    "SMat",
    "SMatConfig",
    "describe_weights",
    "load_model",
    "padded_size",
    "predict_alpha",
    "save_checkpoint",
    "state_from_prompt",
    "weights_digest",
]
