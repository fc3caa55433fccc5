"""aidc's trainer image: a torchrun-compatible DDP trainer with built-in tasks.

The public surface is small: ``python -m aidc_trainer`` runs a rank, ``models.build_model`` and
``export.load_exported`` rebuild a trained model for serving, and ``contract`` holds what the
operator and the trainer agree on. Everything else is internal.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
