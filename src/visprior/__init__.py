"""visprior: medical image networks that borrow priors from human vision."""

# Importing visprior.nets registers every network family.
from visprior.nets import get_model, list_models, register_model
from visprior.nets.official import load_official_checkpoint
from visprior.reparam import reparameterize_model

__version__ = "0.1.0"

__all__ = [
    "get_model",
    "list_models",
    "load_official_checkpoint",
    "register_model",
    "reparameterize_model",
]
