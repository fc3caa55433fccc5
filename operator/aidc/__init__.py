"""aidc: a Kubernetes operator that trains PyTorch models as DDP gangs and serves them.

The package is layered one way: ``api`` (the custom resources as pydantic models) knows
nothing of the rest; ``crdgen`` turns those models into CustomResourceDefinitions; the
role packages (``compute``, ``storage``, ``network``) render Kubernetes objects from the
models; ``management`` decides and applies. The operator never imports torch.
"""

__version__ = "0.1.0"
