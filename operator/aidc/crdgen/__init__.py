"""Generation of the CustomResourceDefinitions from the API models (``aidc crds``)."""

from aidc.crdgen.definitions import render_crds, write_crds

__all__ = ["render_crds", "write_crds"]
