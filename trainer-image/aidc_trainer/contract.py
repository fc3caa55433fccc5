"""What the trainer and the operator agree on: the trainer's own copy of ``aidc.contract``.

The trainer image must not import the operator (no kopf, no kubernetes client here), so the
shared names are written twice; ``tests/contract/test_contract.py`` fails unless both copies
are the same text below their docstrings. Keep this file free of imports other than ``typing``.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "aidc.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
# The operator's name: the managed-by label, its field manager and the source of its events.
OPERATOR_NAME: Final = "aidc-operator"

# Labels that find the objects of a TrainingJob (and of an InferenceService).
LABEL_JOB_NAME: Final = "aidc.io/job-name"
LABEL_REPLICA_INDEX: Final = "aidc.io/replica-index"
LABEL_GANG_ATTEMPT: Final = "aidc.io/gang-attempt"
LABEL_SERVICE_NAME: Final = "aidc.io/inference-service"
# The recommended app.kubernetes.io labels, on every object the operator creates.
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_APP_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_APP_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_APP_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_APP_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
APP_PART_OF: Final = "aidc"
APP_TRAINING_JOB: Final = "aidc-trainingjob"
APP_INFERENCE_SERVICE: Final = "aidc-inferenceservice"

# Rank 0 writes its progress heartbeat (JSON, see HEARTBEAT_FIELDS) into this annotation of
# its own pod; an admission policy limits the pod's token to exactly that write.
ANNOTATION_PROGRESS: Final = "aidc.io/progress"
# The model a serving pod template was rendered for, and the hash of what the operator last
# rendered into an object it keeps in shape (a Deployment, an autoscaler).
ANNOTATION_MODEL_URI: Final = "aidc.io/model-uri"
ANNOTATION_SPEC_HASH: Final = "aidc.io/spec-hash"

# Environment the operator injects into every rank (a user's own command gets it too).
ENV_MASTER_ADDR: Final = "MASTER_ADDR"
ENV_MASTER_PORT: Final = "MASTER_PORT"
ENV_WORLD_SIZE: Final = "WORLD_SIZE"
ENV_RANK: Final = "RANK"
ENV_NODE_RANK: Final = "NODE_RANK"
ENV_NNODES: Final = "NNODES"
ENV_NPROC_PER_NODE: Final = "NPROC_PER_NODE"
ENV_LOCAL_WORLD_SIZE: Final = "LOCAL_WORLD_SIZE"
ENV_CHECKPOINT_DIR: Final = "AIDC_CHECKPOINT_DIR"
ENV_DATA_DIR: Final = "AIDC_DATA_DIR"
ENV_TRAINER_CONFIG: Final = "AIDC_TRAINER_CONFIG"
ENV_CHECKPOINT_EVERY_STEPS: Final = "AIDC_CHECKPOINT_EVERY_STEPS"
ENV_CHECKPOINT_EVERY_SECONDS: Final = "AIDC_CHECKPOINT_EVERY_SECONDS"
ENV_CHECKPOINT_KEEP: Final = "AIDC_CHECKPOINT_KEEP"
ENV_HEARTBEAT_SECONDS: Final = "AIDC_HEARTBEAT_SECONDS"
ENV_JOB_NAME: Final = "AIDC_JOB_NAME"
ENV_POD_NAME: Final = "AIDC_POD_NAME"
ENV_POD_NAMESPACE: Final = "AIDC_POD_NAMESPACE"
ENV_GANG_ATTEMPT: Final = "AIDC_GANG_ATTEMPT"
ENV_METRICS_PORT: Final = "AIDC_METRICS_PORT"
ENV_PYTHON_UNBUFFERED: Final = "PYTHONUNBUFFERED"
# torchrun reads PET_<FLAG> for each of its flags (the launcher of procsPerReplica > 1)
ENV_PET_NNODES: Final = "PET_NNODES"
ENV_PET_NPROC_PER_NODE: Final = "PET_NPROC_PER_NODE"
ENV_PET_NODE_RANK: Final = "PET_NODE_RANK"
ENV_PET_MASTER_ADDR: Final = "PET_MASTER_ADDR"
ENV_PET_MASTER_PORT: Final = "PET_MASTER_PORT"
TORCHRUN_ENV: Final = (
    ENV_PET_NNODES,
    ENV_PET_NPROC_PER_NODE,
    ENV_PET_NODE_RANK,
    ENV_PET_MASTER_ADDR,
    ENV_PET_MASTER_PORT,
)

# Environment the operator gives every model server (the InferenceService's model and batching).
ENV_MODEL_DIR: Final = "AIDC_MODEL_DIR"
ENV_MODEL_NAME: Final = "AIDC_MODEL_NAME"
ENV_HTTP_PORT: Final = "AIDC_HTTP_PORT"
ENV_MAX_BATCH_SIZE: Final = "AIDC_MAX_BATCH_SIZE"
ENV_MAX_DELAY_MS: Final = "AIDC_MAX_DELAY_MS"
ENV_MAX_REQUEST_BYTES: Final = "AIDC_MAX_REQUEST_BYTES"
# Server processes per serving pod, set only when the InferenceService names a count: unset, the
# server starts one per CPU of its container's limit (a new variable would roll every pod).
ENV_SERVER_WORKERS: Final = "AIDC_SERVER_WORKERS"
# Who may call a model server's model routes (none, api-key, kubernetes), and with what: the key
# (from the user's Secret), or the InferenceService a Kubernetes caller needs RBAC on; HTTPS
# from the certificate and key of a kubernetes.io/tls Secret mounted at TLS_MOUNT.
ENV_AUTH: Final = "AIDC_AUTH"
ENV_API_KEY: Final = "AIDC_API_KEY"
ENV_AUTH_NAMESPACE: Final = "AIDC_AUTH_NAMESPACE"
ENV_AUTH_NAME: Final = "AIDC_AUTH_NAME"
ENV_AUTH_AUDIENCES: Final = "AIDC_AUTH_AUDIENCES"
ENV_TLS_CERT_FILE: Final = "AIDC_TLS_CERT_FILE"
ENV_TLS_KEY_FILE: Final = "AIDC_TLS_KEY_FILE"
AUTH_NONE: Final = "none"
AUTH_API_KEY: Final = "api-key"
AUTH_KUBERNETES: Final = "kubernetes"
# The SubjectAccessReview a Kubernetes caller must pass: create on this subresource of its
# InferenceService (the user roles grant it).
INFER_SUBRESOURCE: Final = "infer"
# A server told the model is a language model must serve the OpenAI routes (/v1/...) or fail to
# start; it is ready only after a warm-up generation ran.
ENV_OPENAI: Final = "AIDC_OPENAI"
OPENAI_REQUIRED: Final = "required"

# Where the operator mounts the claims in every rank.
CHECKPOINT_MOUNT: Final = "/mnt/checkpoints"
DATA_MOUNT: Final = "/mnt/data"
MODEL_MOUNT: Final = "/mnt/model"
TLS_MOUNT: Final = "/etc/aidc/tls"

# Layout of a job's checkpoint directory, relative to AIDC_CHECKPOINT_DIR.
CHECKPOINT_LATEST_FILE: Final = "latest"
EXPORT_DIR: Final = "export"
EXPORT_FINAL: Final = "export/final"
EXPORT_BEST: Final = "export/best"
MODEL_MANIFEST: Final = "manifest.json"
MODEL_WEIGHTS: Final = "model.pt"

# The heartbeat JSON's keys (camelCase, like the status it lands in).
HEARTBEAT_FIELDS: Final = (
    "step",
    "totalSteps",
    "epoch",
    "loss",
    "metrics",
    "samplesPerSecond",
    "etaSeconds",
    "checkpoint",
    "model",
    "time",
)

# Exit codes. Preemption (SIGTERM -> checkpoint -> 143) and SIGKILL (137) are retryable by
# default; bad input exits with a sysexits code the operator never retries.
EXIT_OK: Final = 0
EXIT_PREEMPTED: Final = 143
EXIT_KILLED: Final = 137
EXIT_DATA_ERROR: Final = 65  # EX_DATAERR: a dataset missing or of a shape the task cannot take
EXIT_CONFIG_ERROR: Final = 78  # EX_CONFIG: an unknown task or an invalid trainer config
DEFAULT_RETRYABLE_EXIT_CODES: Final = (EXIT_KILLED, EXIT_PREEMPTED)
PERMANENT_EXIT_CODES: Final = (EXIT_DATA_ERROR, EXIT_CONFIG_ERROR)

# The model server (same image) listens here.
SERVER_PORT: Final = 8080
TRAINER_METRICS_PORT: Final = 9090
