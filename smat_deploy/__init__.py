"""smat-deploy: SMat (automatic + interactive ViT matting) from PyTorch to verified, fast inference."""

from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, SMatConfig, load_model, save_checkpoint

__version__ = "0.1.0"

__all__ = ["Runtime", "SMat", "SMatConfig", "SmatError", "__version__", "load_model", "save_checkpoint"]


def __getattr__(name: str) -> object:
    """``smat_deploy.Runtime`` without importing ONNX Runtime for users of the model alone."""
    if name == "Runtime":
        from smat_deploy.runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'smat_deploy' has no attribute {name!r}")
