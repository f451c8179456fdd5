"""smat-deploy: SMat (automatic + interactive ViT matting) from PyTorch to verified, fast inference."""

from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, SMatConfig, load_model, save_checkpoint

__version__ = "0.1.0"

__all__ = ["SMat", "SMatConfig", "SmatError", "__version__", "load_model", "save_checkpoint"]
