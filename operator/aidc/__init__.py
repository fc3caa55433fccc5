"""aidc: a Kubernetes operator that trains PyTorch models as DDP gangs and serves them.

Layers point down, each importing only those below it (import-linter checks it, see
pyproject.toml): ``contract`` (what the operator and the trainer agree on) and ``settings``;
``api`` (the custom resources as pydantic models); ``identity`` (names, labels, owner
references); the pure builders of the roles, ``compute`` (pods), ``network`` (Services) and
``storage`` (claims), none importing another; ``management`` (observe, decide, apply) beside
``crdgen`` (the CRDs from the models); ``runtime`` (kopf's wiring); ``cli``. The operator
never imports torch.
"""

__version__ = "0.1.0"
