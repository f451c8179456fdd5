"""Training SMat as the paper describes it: the objective, Algorithm 1's step, and fine-tuning runs.

Data comes from :mod:`smat_deploy.data` (synthetic composites, image/alpha folders, prompt sampling);
this package only depends on it and on the model, never on export or runtime code.
"""

from smat_deploy.train.batches import BatchSampler, TrainingBatch
from smat_deploy.train.finetune import FinetuneConfig, FinetuneResult, finetune, read_resume_state
from smat_deploy.train.heldout import HeldoutScore, evaluate_heldout
from smat_deploy.train.losses import (
    MattingLosses,
    laplacian_loss,
    laplacian_pyramid,
    matting_loss,
    separate_l1_loss,
    trimap_from_alpha,
)
from smat_deploy.train.step import build_optimizer, freeze_backbone, predict_for_training, training_step

__all__ = [
    "BatchSampler",
    "FinetuneConfig",
    "FinetuneResult",
    "HeldoutScore",
    "MattingLosses",
    "TrainingBatch",
    "build_optimizer",
    "evaluate_heldout",
    "finetune",
    "freeze_backbone",
    "laplacian_loss",
    "laplacian_pyramid",
    "matting_loss",
    "predict_for_training",
    "read_resume_state",
    "separate_l1_loss",
    "training_step",
    "trimap_from_alpha",
]
