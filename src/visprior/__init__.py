"""visprior: medical image networks that borrow priors from human vision."""

from visprior.deploy.export import export_onnx, export_torchscript

# Importing visprior.nets registers every network family.
from visprior.nets import get_model, list_models, register_model
from visprior.nets.official import load_official_checkpoint
from visprior.reparam import reparameterize_model

__version__ = "0.1.0"

__all__ = [
    "export_onnx",
    "export_torchscript",
    "get_model",
    "list_models",
    "load_official_checkpoint",
    "register_model",
    "reparameterize_model",
]
