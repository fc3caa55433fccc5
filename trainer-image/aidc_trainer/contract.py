"""What the trainer and the operator agree on: the trainer's own copy of ``aidc.contract``.

The trainer image must not import the operator (no kopf, no kubernetes client here), so the
shared names are written twice; ``tests/contract/test_contract.py`` imports both copies and
fails when a name or a value drifts. Keep this file free of imports other than ``typing``.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "aidc.io"

# Labels on every object the operator creates for a TrainingJob.
LABEL_JOB_NAME: Final = "aidc.io/job-name"
LABEL_REPLICA_INDEX: Final = "aidc.io/replica-index"
LABEL_GANG_ATTEMPT: Final = "aidc.io/gang-attempt"
LABEL_SERVICE_NAME: Final = "aidc.io/inference-service"

# Rank 0 writes its progress heartbeat (JSON, see HEARTBEAT_FIELDS) into this annotation of
# its own pod; an admission policy limits the pod's token to exactly that write.
ANNOTATION_PROGRESS: Final = "aidc.io/progress"

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
# torchrun reads PET_<FLAG> for each of its flags
TORCHRUN_ENV: Final = (
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)

# Where the operator mounts the claims in every rank.
CHECKPOINT_MOUNT: Final = "/mnt/checkpoints"
DATA_MOUNT: Final = "/mnt/data"
MODEL_MOUNT: Final = "/mnt/model"

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
