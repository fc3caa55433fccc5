"""The InferenceService custom resource: a served model, typically a TrainingJob's export."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from aidc.api.base import ApiModel, CelRule, StatusModel
from aidc.api.common import NAME_RULE, Conditions, Placement, PodTemplateOverrides, Resources
from aidc.api.core import MAX_ENV, EnvVar
from aidc.api.network import ServingNetwork
from aidc.api.trainingjob import Task

ExportChoice = Literal["Final", "Best"]
AutoscalingMetric = Literal["cpu", "memory"]
MAX_SERVER_WORKERS = 256  # the server's own bound on --workers
ServingPhase = Literal["Pending", "ModelNotReady", "Deploying", "Ready", "Failed"]


class FromTrainingJob(ApiModel):
    """Serve the model a TrainingJob in the same namespace exported."""

    name: str = Field(min_length=1, description="Name of the TrainingJob.")
    export: ExportChoice = Field(
        default="Final", description="Final (the model at the end of training) or Best (best validation metric)."
    )


class ModelSource(ApiModel):
    """Which model to serve: from a TrainingJob or from a path on a claim. Mounted read-only."""

    from_training_job: FromTrainingJob | None = Field(
        default=None, description="Resolve the model through a TrainingJob's status."
    )
    storage_uri: str | None = Field(
        default=None,
        description="pvc://<claim>/<folder> holding model.pt and manifest.json.",
        pattern=r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?$",
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z0-9][-_.a-zA-Z0-9]*$",
        description="Model name in the inference URLs (/v2/models/<name>); the InferenceService's name when unset.",
    )
    task: Task | None = Field(
        default=None,
        description="What a storageUri export holds (a TrainingJob's export says so itself): language-model "
        "requires the OpenAI routes (/v1/completions, /v1/chat/completions) of the server.",
    )

    cel_rules = (
        CelRule(
            "has(self.fromTrainingJob) || has(self.storageUri)",
            "set fromTrainingJob (a TrainingJob's export) or storageUri (pvc://<claim>/<folder>)",
            lambda m: m.from_training_job is not None or m.storage_uri is not None,
        ),
        CelRule(
            "!(has(self.fromTrainingJob) && has(self.storageUri))",
            "set either fromTrainingJob or storageUri, not both",
            lambda m: m.from_training_job is None or m.storage_uri is None,
        ),
        CelRule(
            "!has(self.task) || has(self.storageUri)",
            "task is for a storageUri model: a TrainingJob's export carries its job's task",
            lambda m: m.task is None or m.storage_uri is not None,
        ),
        CelRule(
            "!has(self.storageUri) || self.storageUri.startsWith('pvc://')",
            "storageUri must start with pvc:// (pvc://<claim>/<folder>)",
            lambda m: m.storage_uri is None or m.storage_uri.startswith("pvc://"),
        ),
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) between minReplicas and maxReplicas."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest serving pods.")
    max_replicas: int = Field(ge=1, le=1000, description="Most serving pods.")
    metric: AutoscalingMetric = Field(default="cpu", description="Resource whose utilization drives scaling.")
    target_utilization_percent: int = Field(
        default=80, ge=1, le=100, description="Average utilization of the metric to aim for."
    )

    cel_rules = (
        CelRule(
            "self.maxReplicas >= self.minReplicas",
            "maxReplicas must be greater than or equal to minReplicas",
            lambda a: a.max_replicas >= a.min_replicas,
        ),
    )


class Batching(ApiModel):
    """Dynamic batching: concurrent requests run as one forward pass."""

    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most requests in one forward pass.")
    max_delay_ms: int = Field(
        default=5,
        ge=0,
        le=10000,
        description=(
            "Longest a batch that formed while the model was busy waits for more requests, in ms; a request "
            "that finds the model idle runs at once."
        ),
    )


_SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class KubernetesAuth(ApiModel):
    """Callers present a Kubernetes bearer token (a ServiceAccount's or a user's).

    The server checks it with a TokenReview, then asks a SubjectAccessReview whether its
    owner may ``create`` the ``inferenceservices/infer`` subresource of this InferenceService.
    """

    audiences: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Audiences a caller's token must be issued for (kubectl create token --audience); empty: the API "
            "server's own, so the server sees tokens that are also good against the API server."
        ),
    )


class ApiKeyAuth(ApiModel):
    """Callers present a shared key as the header Authorization: Bearer <key> (what OpenAI clients send)."""

    secret_name: str = Field(
        min_length=1, max_length=253, pattern=_SECRET_NAME, description="Secret in this namespace holding the key."
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key of the Secret's data entry."
    )


class InferenceAuth(ApiModel):
    """Who may call the model routes; the health routes stay open for the kubelet's probes."""

    kubernetes: KubernetesAuth | None = Field(
        default=None, description="Kubernetes identities, allowed by RBAC on inferenceservices/infer."
    )
    api_key: ApiKeyAuth | None = Field(default=None, description="One shared key from a Secret.")

    cel_rules = (
        CelRule(
            "has(self.kubernetes) != has(self.apiKey)",
            "auth: set exactly one of kubernetes or apiKey",
            lambda a: (a.kubernetes is None) != (a.api_key is None),
        ),
    )


class ServingTls(ApiModel):
    """HTTPS from a certificate the user provides."""

    secret_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=_SECRET_NAME,
        description="A kubernetes.io/tls Secret in this namespace (tls.crt and tls.key).",
    )


class InferenceServiceSpec(ApiModel):
    """The desired serving Deployment."""

    model: ModelSource = Field(description="The model to serve.")
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Serving pods (1 when unset); leave unset with autoscaling."
    )
    autoscaling: Autoscaling | None = Field(default=None, description="Scale between bounds instead.")
    resources: Resources = Field(default_factory=Resources, description="What each serving pod requests.")
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SERVER_WORKERS,
        description=(
            "Server processes per pod sharing its port, each with its own batcher and copy of the model; "
            "unset: one per CPU of the pod's CPU limit (one on a GPU)."
        ),
    )
    image: str | None = Field(
        default=None, min_length=1, description="Server image; the operator's default trainer image when unset."
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest request body accepted (413 above)."
    )
    env: Annotated[list[EnvVar], Field(max_length=MAX_ENV)] = Field(
        default_factory=list, description="Extra environment of the server."
    )
    network: ServingNetwork | None = Field(
        default=None,
        description="Who may connect to the server; by default every pod of the InferenceService's namespace.",
    )
    placement: Placement = Field(default_factory=Placement, description="Node selection.")
    auth: InferenceAuth | None = Field(
        default=None, description="Require a credential on the model routes; off (anyone who reaches it) when unset."
    )
    tls: ServingTls | None = Field(default=None, description="Serve HTTPS instead of plain HTTP.")
    pod_template: PodTemplateOverrides = Field(
        default_factory=PodTemplateOverrides, description="Labels, annotations and pod-spec fields for every pod."
    )

    cel_rules = (
        CelRule(
            "!(has(self.replicas) && has(self.autoscaling))",
            "set either replicas or autoscaling, not both",
            lambda s: s.replicas is None or s.autoscaling is None,
        ),
    )


class ServedModel(StatusModel):
    """The model the serving pods load."""

    uri: str = Field(description="pvc://<claim>/<folder> of the model.")
    claim_name: str = Field(description="Claim mounted read-only.")
    path: str = Field(description="Folder inside the claim.")
    training_job: str | None = Field(default=None, description="TrainingJob that exported it.")
    step: int | None = Field(default=None, description="Training step of the export.")
    size_bytes: int | None = Field(default=None, description="Size of the weights, when the TrainingJob reported it.")
    task: Task | None = Field(
        default=None, description="What the model is, when known: the TrainingJob's task or spec.model.task."
    )


class InferenceServiceStatus(StatusModel):
    """What the operator observed. Written only by the operator."""

    phase: ServingPhase = Field(default="Pending", description="Summary for kubectl get.")
    reason: str | None = Field(default=None, description="CamelCase reason of the phase (ModelNotFound, ...).")
    conditions: Conditions = Field(default_factory=list, description="ModelResolved, Available and Ready.")
    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    url: str | None = Field(default=None, description="In-cluster base URL of the v2 protocol.")
    protocol: str | None = Field(
        default=None, description="What the server answers: v2 (with KServe v1), or v2+openai for a language model."
    )
    openai_url: str | None = Field(
        default=None, description="Base URL of the OpenAI API (a client's base_url), for a language model."
    )
    replicas: int = Field(default=0, description="Serving pods that exist.")
    ready_replicas: int = Field(default=0, description="Serving pods that are ready.")
    selector: str | None = Field(default=None, description="Label selector of the serving pods (scale subresource).")
    model: ServedModel | None = Field(default=None, description="The model being served.")
    previous_model: ServedModel | None = Field(
        default=None, description="The model served before the last change, to roll back by editing one field."
    )


class InferenceService(ApiModel):
    """A model served over the Open Inference Protocol v2."""

    api_version: Literal["aidc.io/v1alpha1"] = Field(default="aidc.io/v1alpha1", description="aidc.io/v1alpha1")
    kind: Literal["InferenceService"] = Field(default="InferenceService", description="InferenceService")
    metadata: Annotated[dict[str, Any], Field(description="Standard object metadata.")] = {}
    spec: InferenceServiceSpec = Field(description="The desired serving Deployment.")
    status: InferenceServiceStatus | None = Field(default=None, description="What the operator observed.")

    cel_rules = (NAME_RULE,)
