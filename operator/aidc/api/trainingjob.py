"""The TrainingJob custom resource: a DDP gang of pods that trains one model.

Each class is one block of the spec; field descriptions become ``kubectl explain`` text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool

from aidc.api.base import ApiModel, CelRule, FieldRule, StatusModel
from aidc.api.common import NAME_RULE, Conditions, Placement, PodTemplateOverrides, Resources
from aidc.api.core import MAX_ENV, EnvVar
from aidc.api.quantity import Quantity

Task = Literal["classifier", "gan", "language-model", "reinforcement-learning"]
DatasetSource = Literal["synthetic", "digits", "npz", "image-folder", "text", "jsonl"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Strategy = Literal["DDP", "FSDP"]
RestartPolicy = Literal["Never", "OnFailure", "OnRetryableExitCode"]
GangScheduler = Literal["None", "Kueue", "Volcano", "Coscheduling"]
ScheduleTimeoutAction = Literal["Wait", "Fail"]
CleanPodPolicy = Literal["All", "Running", "None"]
ClaimReclaimPolicy = Literal["Retain", "Delete"]
AccessMode = Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany", "ReadWriteMany"]
TrainingPhase = Literal["Pending", "Queued", "Running", "Restarting", "Suspended", "Succeeded", "Failed"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# a PersistentVolumeClaim's name is a DNS-1123 subdomain
ClaimName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
]
# a volume's subPath: relative, and never up out of the claim (the pod would be refused)
SUB_PATH_RULE = FieldRule(
    "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",
    "must be a relative path without '..'",
    lambda path: not path.startswith("/") and ".." not in path.split("/"),
)
SubPath = Annotated[str, Field(max_length=1024), SUB_PATH_RULE]
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RL_TASK = "reinforcement-learning"
LM_TASK = "language-model"
# a registered Gymnasium id: optional namespace, name, version (CartPole-v1, ALE/Pong-v5)
GYMNASIUM_ID = r"^[A-Za-z0-9_/-]+-v[0-9]+$"
# an importable class in the trainer's image: module.path:ClassName
ENTRY_POINT = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class Dataset(ApiModel):
    """Where the built-in trainer reads its data."""

    source: DatasetSource = Field(
        default="digits",
        description=(
            "synthetic (generated), digits (scikit-learn's 8x8 digits resized to 28x28, shipped in the "
            "image), npz (keys x and y), image-folder (one folder per class), text (language model) or jsonl "
            '(one {"prompt": ..., "response": ...} object per line: fine-tuning a pretrained language model, '
            "the loss on the response only)."
        ),
    )
    path: str | None = Field(
        default=None,
        description="File or folder on the data claim (relative to its mount) for npz, image-folder, text.",
    )
    samples: int | None = Field(default=None, ge=1, description="Number of generated samples for synthetic.")

    cel_rules = (
        CelRule(
            "!(self.source in ['npz', 'image-folder', 'text', 'jsonl']) || has(self.path)",
            "dataset.path is required for npz, image-folder, text and jsonl datasets",
            lambda d: d.source not in ("npz", "image-folder", "text", "jsonl") or d.path is not None,
        ),
    )


class Lora(ApiModel):
    """Low-rank adapters (peft): only they train; the export holds them and a merged model."""

    rank: int = Field(default=8, ge=1, le=1024, description="Rank of each adapter.")
    alpha: int = Field(default=16, ge=1, le=4096, description="Scale of the adapters' update (alpha / rank).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Names of the linear layers that get adapters (q_proj, v_proj, ...); unset: peft's "
        "choice for the architecture.",
    )


class Pretrained(ApiModel):
    """A Hugging Face causal language model to start from, already on a claim (nothing is downloaded)."""

    path: str = Field(
        min_length=1,
        max_length=1024,
        description="Folder written by save_pretrained (config.json, safetensors weights, tokenizer files), "
        "relative to the data claim, or absolute inside the image.",
    )
    lora: Lora | None = Field(default=None, description="Train low-rank adapters instead of every weight.")


class LanguageModelShape(ApiModel):
    """Size of the built-in decoder-only transformer, or the pretrained model to fine-tune."""

    context_length: int = Field(default=128, ge=8, le=8192, description="Tokens per training sequence.")
    layers: int = Field(default=4, ge=1, le=96, description="Transformer blocks.")
    heads: int = Field(default=4, ge=1, le=128, description="Attention heads per block.")
    embedding: int = Field(default=256, ge=16, le=16384, description="Embedding width; a multiple of heads.")
    pretrained: Pretrained | None = Field(
        default=None,
        description="Fine-tune this pretrained model (with its own tokenizer) instead of training the built-in "
        "one from scratch; layers, heads and embedding are then the model's own, contextLength still sets "
        "the tokens per training sequence.",
    )

    cel_rules = (
        CelRule(
            "self.embedding % self.heads == 0",
            "languageModel.embedding must be a multiple of languageModel.heads",
            lambda m: m.embedding % m.heads == 0,
        ),
    )


class Parallelism(ApiModel):
    """How the model is spread over the gang's processes."""

    strategy: Strategy = Field(
        default="DDP",
        description="DDP: every rank keeps the whole model, its gradients and optimizer state, and all-reduces "
        "the gradients. FSDP: every rank keeps 1/N of each (FSDP2, one unit per transformer block), for models "
        "whose state does not fit one GPU; its checkpoints are written by every rank, so the checkpoint claim "
        "is mounted on every rank (ReadWriteMany when ranks run on several nodes). language-model task only.",
    )
    activation_checkpointing: StrictBool = Field(
        default=False,
        description="Recompute each transformer block's activations in the backward pass instead of keeping "
        "them: less memory for about a third more compute.",
    )


class RlEnvironment(ApiModel):
    """The environment the agent acts in: a registered Gymnasium id or your own class, exactly one."""

    gymnasium_id: str | None = Field(
        default=None,
        max_length=128,
        pattern=GYMNASIUM_ID,
        description="A Gymnasium id made by gymnasium.make (CartPole-v1, Acrobot-v1, Pendulum-v1, ...); "
        "the classic-control environments ship with the trainer image and need no download.",
    )
    entry_point: str | None = Field(
        default=None,
        max_length=256,
        pattern=ENTRY_POINT,
        description="Your own gymnasium.Env subclass as module.path:ClassName, importable in the trainer image "
        "(a custom spec.image); constructed without arguments.",
    )

    cel_rules = (
        CelRule(
            "has(self.gymnasiumId) != has(self.entryPoint)",
            "reinforcementLearning.environment: set exactly one of gymnasiumId or entryPoint",
            lambda e: (e.gymnasium_id is None) != (e.entry_point is None),
        ),
    )


class Ppo(ApiModel):
    """Proximal Policy Optimization's hyperparameters; the defaults are CleanRL's for classic control."""

    clip: float = Field(default=0.2, gt=0, le=1, description="Clip range of the policy ratio.")
    gae_lambda: float = Field(default=0.95, ge=0, le=1, description="Lambda of generalized advantage estimation.")
    gamma: float = Field(default=0.99, ge=0, le=1, description="Discount factor of rewards.")
    epochs: int = Field(default=4, ge=1, le=100, description="Update epochs over each rollout.")
    minibatches: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Minibatches per update epoch; envsPerRank * rolloutSteps must be a multiple of it.",
    )
    entropy_coef: float = Field(default=0.01, ge=0, description="Weight of the entropy bonus in the loss.")
    value_coef: float = Field(default=0.5, ge=0, description="Weight of the value loss in the loss.")
    max_grad_norm: float = Field(default=0.5, gt=0, description="Clip the gradient norm to this.")
    clip_value_loss: StrictBool = Field(
        default=True,
        description="Clip the value update around the rollout's values by clip (CleanRL's clip_vloss). Turn it "
        "off when returns are large, as Pendulum's: a step of 0.2 then barely moves the value.",
    )


class ReinforcementLearning(ApiModel):
    """The reinforcement-learning task: PPO on vectorised environments, each rank with its own."""

    environment: RlEnvironment = Field(description="The environment: gymnasiumId or entryPoint.")
    total_steps: int = Field(
        default=100000, ge=1, description="Environment steps over all ranks; progress and ETA count these."
    )
    envs_per_rank: int = Field(
        default=4, ge=1, le=256, description="Vectorised environments stepped by each rank process."
    )
    rollout_steps: int = Field(
        default=128, ge=1, le=8192, description="Steps of each environment per rollout, before an update."
    )
    evaluation_episodes: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Episodes of the deterministic policy at the end; their mean return is reported in "
        "status.progress.metrics.evaluationReturn (0: no evaluation).",
    )
    ppo: Ppo = Field(default_factory=Ppo, description="PPO's hyperparameters.")

    cel_rules = (
        CelRule(
            "(self.envsPerRank * self.rolloutSteps) % self.ppo.minibatches == 0",
            "reinforcementLearning.ppo.minibatches must divide envsPerRank * rolloutSteps (the rollout of a rank)",
            lambda r: (r.envs_per_rank * r.rollout_steps) % r.ppo.minibatches == 0,
            field_path=".ppo.minibatches",
        ),
    )


class TrainerConfig(ApiModel):
    """Configuration of the built-in trainer (passed to it as AIDC_TRAINER_CONFIG)."""

    task: Task = Field(description="classifier, gan, language-model or reinforcement-learning.")
    dataset: Dataset | None = Field(
        default=None,
        description=(
            "The training data. Unset: scikit-learn's digits for classifier and gan, synthetic text for "
            "language-model (the trainer chooses per task); none for reinforcement-learning, whose "
            "environment makes its data."
        ),
    )
    epochs: int = Field(default=8, ge=1, le=100000, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(default=32, ge=1, le=65536, description="Samples per rank per step.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="Initial learning rate; unset: the task's own (1e-3 classifier, 2e-4 gan, 3e-4 language-model, "
        "2.5e-4 reinforcement-learning).",
    )
    precision: Precision = Field(
        default="auto", description="auto (bf16 on GPUs that support it, fp32 on CPU), fp32, bf16 or fp16."
    )
    seed: int = Field(default=0, ge=0, description="Seed of every random generator, for exact resumes.")
    validation_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Share of the data held out for validation."
    )
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Micro-batches accumulated per optimizer step."
    )
    gradient_clip_norm: float | None = Field(default=None, gt=0, description="Clip the gradient norm to this.")
    language_model: LanguageModelShape | None = Field(
        default=None, description="Shape of the language model (task language-model)."
    )
    reinforcement_learning: ReinforcementLearning | None = Field(
        default=None,
        description="Environment, step budget and PPO hyperparameters (task reinforcement-learning, required there).",
    )
    parallelism: Parallelism | None = Field(
        default=None, description="DDP (the default) or FSDP, and activation checkpointing."
    )

    cel_rules = (
        CelRule(
            f"self.task != '{RL_TASK}' || has(self.reinforcementLearning)",
            f"trainer.reinforcementLearning is required for the {RL_TASK} task",
            lambda t: t.task != RL_TASK or t.reinforcement_learning is not None,
            field_path=".reinforcementLearning",
        ),
        CelRule(
            f"self.task == '{RL_TASK}' || !has(self.reinforcementLearning)",
            f"trainer.reinforcementLearning is only for the {RL_TASK} task",
            lambda t: t.task == RL_TASK or t.reinforcement_learning is None,
            field_path=".reinforcementLearning",
        ),
        CelRule(
            "!has(self.parallelism) || !has(self.parallelism.strategy) || self.parallelism.strategy != 'FSDP' "
            f"|| self.task == '{LM_TASK}'",
            f"trainer.parallelism.strategy FSDP is for the {LM_TASK} task (its transformer blocks are the shards)",
            lambda t: t.parallelism is None or t.parallelism.strategy != "FSDP" or t.task == LM_TASK,
            field_path=".parallelism.strategy",
        ),
        CelRule(
            "!has(self.parallelism) || !has(self.parallelism.strategy) || self.parallelism.strategy != 'FSDP' "
            "|| !has(self.precision) || self.precision != 'fp16'",
            "trainer.parallelism.strategy FSDP trains in bf16 or fp32: set precision to auto, bf16 or fp32",
            lambda t: t.parallelism is None or t.parallelism.strategy != "FSDP" or t.precision != "fp16",
            field_path=".precision",
        ),
        CelRule(
            f"self.task != '{RL_TASK}' || !has(self.dataset)",
            f"trainer.dataset is not read by the {RL_TASK} task: its environment makes the data",
            lambda t: t.task != RL_TASK or t.dataset is None,
            field_path=".dataset",
        ),
    )


class SnapshotOnSuccess(ApiModel):
    """Take one VolumeSnapshot of the checkpoint claim when the job succeeds, named
    <job>-checkpoints-<first 8 characters of the job's uid> ({} uses the default VolumeSnapshotClass);
    status.snapshot and the SnapshotTaken condition report it. It has no owner: deleting the job keeps
    the backup. Needs the snapshot.storage.k8s.io API (the CSI snapshot CRDs and controller) and a CSI
    driver that can snapshot the claim's volume."""

    volume_snapshot_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="VolumeSnapshotClass of the snapshot (its CSI driver and deletionPolicy); the cluster's "
        "default class for the claim's driver when unset.",
    )


class CheckpointStorage(ApiModel):
    """The claim checkpoints and exported models are written to (by rank 0 only)."""

    claim_name: ClaimName | None = Field(default=None, description="An existing PersistentVolumeClaim to use.")
    size: Quantity | None = Field(
        default=None, description="Size of a claim the operator creates, named <job>-checkpoints."
    )
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the claim the operator creates; the default class if unset."
    )
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteOnce"]),
        description="Access modes of the claim the operator creates. Only rank 0 mounts it, so RWO works.",
    )
    sub_path: SubPath | None = Field(
        default=None, description="Folder inside the claim for this job; the job's name when unset."
    )
    reclaim_policy: ClaimReclaimPolicy = Field(
        default="Retain",
        description="Retain keeps a claim the operator created after the job is deleted (checkpoints are data); "
        "Delete removes it with the job. A claim named by claimName is never deleted.",
    )
    snapshot_on_success: SnapshotOnSuccess | None = Field(
        default=None,
        description="A VolumeSnapshot of the claim when the job succeeds, kept after the job (a backup).",
    )

    cel_rules = (
        CelRule(
            "has(self.claimName) || has(self.size)",
            "set claimName (an existing claim) or size (a claim the operator creates)",
            lambda c: c.claim_name is not None or c.size is not None,
        ),
        CelRule(
            "!(has(self.claimName) && has(self.size))",
            "set either claimName (an existing claim) or size (a claim the operator creates), not both",
            lambda c: c.claim_name is None or c.size is None,
        ),
    )


class DataStorage(ApiModel):
    """A claim of input data, mounted read-only by every rank."""

    claim_name: ClaimName = Field(
        description="An existing PersistentVolumeClaim; every rank mounts it "
        "read-only, so it needs ReadOnlyMany or ReadWriteMany across nodes.",
    )
    sub_path: SubPath | None = Field(default=None, description="Folder inside the claim to mount.")


class Storage(ApiModel):
    """The job's claims. Immutable: moving checkpoints mid-training would lose them."""

    checkpoints: CheckpointStorage | None = Field(
        default=None, description="Where checkpoints and the exported model go. Without it nothing survives a restart."
    )
    data: DataStorage | None = Field(default=None, description="Training data, mounted read-only.")


class CheckpointPolicy(ApiModel):
    """How often rank 0 writes a checkpoint, and how many it keeps."""

    every_steps: int = Field(default=0, ge=0, description="Checkpoint every N optimizer steps; 0 turns it off.")
    every_seconds: int = Field(default=300, ge=0, description="Checkpoint every N seconds; 0 turns it off.")
    keep: int = Field(default=3, ge=1, le=1000, description="Checkpoints kept; older ones are deleted.")


class FailurePolicy(ApiModel):
    """What happens when a rank fails. The whole gang restarts together and resumes from its checkpoint."""

    restart_policy: RestartPolicy = Field(
        default="OnRetryableExitCode",
        description="Never fails the job on the first failed rank; OnFailure restarts the gang on any failure "
        "except a permanent exit code (65, 78); OnRetryableExitCode restarts only on retryableExitCodes.",
    )
    backoff_limit: int = Field(default=3, ge=0, le=1000, description="Gang restarts allowed before the job fails.")
    retryable_exit_codes: list[int] = Field(
        default_factory=lambda: [137, 143],
        description="Exit codes that restart the gang under OnRetryableExitCode (137 and 143: preemption).",
    )
    backoff_seconds: int = Field(
        default=10, ge=0, le=3600, description="Wait before the first restart; doubles each time up to 10 minutes."
    )
    hang_timeout_seconds: int | None = Field(
        default=None,
        ge=10,
        description="Restart the gang (reason Stalled) when rank 0 reports no new step for this long (a heartbeat "
        "that repeats its step is no progress). Counted from when every rank runs, so it must cover the trainer's "
        "start (imports, rendezvous, loading the checkpoint).",
    )


class SchedulingPolicy(ApiModel):
    """How the gang is scheduled: all ranks together or none."""

    gang_scheduler: GangScheduler = Field(
        default="None",
        description="None, Kueue (plain pod group), Volcano (PodGroup) or Coscheduling (scheduler-plugins PodGroup).",
    )
    queue: str | None = Field(default=None, description="Kueue LocalQueue or Volcano queue.")
    scheduler_name: str | None = Field(
        default=None, description="Scheduler of the pods; volcano or the coscheduling scheduler's name when unset."
    )
    schedule_timeout_seconds: int = Field(
        default=300, ge=1, description="How long the gang may wait to be fully scheduled before it is reported."
    )
    on_schedule_timeout: ScheduleTimeoutAction = Field(
        default="Wait", description="Wait keeps waiting (reason Unschedulable); Fail fails the job."
    )
    placement: Placement = Field(default_factory=Placement, description="Node selection for every rank.")


class RunPolicy(ApiModel):
    """The job's lifetime."""

    suspend: bool = Field(default=False, description="Delete the gang and keep the job; false again resumes it.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job (reason DeadlineExceeded) after this long since it started."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the TrainingJob this long after it finished."
    )
    clean_pod_policy: CleanPodPolicy = Field(
        default="Running",
        description="Pods deleted when the job ends: All, Running (keeps finished ones for their logs) or None.",
    )


class TrainingJobSpec(ApiModel):
    """The desired gang."""

    replicas: int = Field(default=1, ge=1, le=4096, description="Pods in the gang, one per node rank.")
    procs_per_replica: int = Field(
        default=1, ge=1, le=64, description="Processes per pod (usually GPUs per pod), launched through torchrun."
    )
    image: str | None = Field(
        default=None, min_length=1, description="Trainer image; the operator's default trainer image when unset."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Pull policy of the trainer image."
    )
    command: list[str] | None = Field(
        default=None, description="Your own torchrun-compatible command instead of the built-in trainer."
    )
    args: list[str] | None = Field(default=None, description="Arguments of the command.")
    env: Annotated[list[EnvVar], Field(max_length=MAX_ENV)] = Field(
        default_factory=list, description="Extra environment for every rank."
    )
    trainer: TrainerConfig | None = Field(default=None, description="The built-in trainer's configuration.")
    resources: Resources = Field(default_factory=Resources, description="What each pod requests.")
    master_port: int = Field(default=29500, ge=1024, le=65535, description="Rendezvous port on rank 0.")
    storage: Storage = Field(default_factory=Storage, description="Checkpoint and data claims (immutable).")
    checkpoint_policy: CheckpointPolicy = Field(default_factory=CheckpointPolicy, description="Checkpoint cadence.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, description="Restarts and hang detection.")
    scheduling_policy: SchedulingPolicy = Field(
        default_factory=SchedulingPolicy, description="Gang scheduling and placement."
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Suspension, deadline, clean-up.")
    pod_template: PodTemplateOverrides = Field(
        default_factory=PodTemplateOverrides, description="Labels, annotations and pod-spec fields for every pod."
    )

    cel_rules = (
        CelRule(
            "has(self.trainer) || has(self.command)",
            "spec.trainer is required unless spec.command runs your own script",
            lambda s: s.trainer is not None or s.command is not None,
        ),
        CelRule(
            "!has(self.trainer) || self.trainer.task != 'language-model' || !has(self.trainer.dataset) || "
            "self.trainer.dataset.source in ['synthetic', 'text', 'jsonl']",
            "the language-model task reads a synthetic, text or jsonl dataset",
            lambda s: (
                s.trainer is None
                or s.trainer.task != "language-model"
                or s.trainer.dataset is None
                or s.trainer.dataset.source in ("synthetic", "text", "jsonl")
            ),
        ),
        CelRule(
            "!has(self.trainer) || !has(self.trainer.dataset) || self.trainer.dataset.source != 'jsonl' || "
            "(has(self.trainer.languageModel) && has(self.trainer.languageModel.pretrained))",
            "a jsonl dataset (prompt/response pairs) needs trainer.languageModel.pretrained, whose tokenizer reads it",
            lambda s: (
                s.trainer is None
                or s.trainer.dataset is None
                or s.trainer.dataset.source != "jsonl"
                or (s.trainer.language_model is not None and s.trainer.language_model.pretrained is not None)
            ),
        ),
        CelRule(
            "!has(self.trainer) || !has(self.trainer.languageModel) || !has(self.trainer.languageModel.pretrained) "
            "|| self.trainer.languageModel.pretrained.path.startsWith('/') || has(self.storage.data)",
            "trainer.languageModel.pretrained.path is on the data claim: set spec.storage.data (or an absolute path "
            "inside the image)",
            lambda s: (
                s.trainer is None
                or s.trainer.language_model is None
                or s.trainer.language_model.pretrained is None
                or s.trainer.language_model.pretrained.path.startswith("/")
                or s.storage.data is not None
            ),
        ),
        CelRule(
            "!has(self.trainer) || self.trainer.task == 'language-model' || !has(self.trainer.dataset) || "
            "!(self.trainer.dataset.source in ['text', 'jsonl'])",
            "text and jsonl datasets are only for the language-model task",
            lambda s: (
                s.trainer is None
                or s.trainer.task == "language-model"
                or s.trainer.dataset is None
                or s.trainer.dataset.source not in ("text", "jsonl")
            ),
        ),
        CelRule(
            "!has(self.resources.gpus) || self.resources.gpus == 0 || self.procsPerReplica <= self.resources.gpus",
            "procsPerReplica must not exceed resources.gpus when GPUs are requested: each process drives one GPU",
            lambda s: s.resources.gpus == 0 or s.procs_per_replica <= s.resources.gpus,
            field_path=".procsPerReplica",
        ),
        CelRule(
            "self.storage == oldSelf.storage",
            "spec.storage is immutable: moving a running job's checkpoints would lose them",
        ),
    )


class ReplicaCounts(StatusModel):
    """How many pods of the current gang are in each state."""

    desired: int = Field(default=0, description="Pods the gang should have.")
    pending: int = Field(default=0, description="Pods created but not running (scheduling, pulling, starting).")
    running: int = Field(default=0, description="Pods running.")
    succeeded: int = Field(default=0, description="Pods whose containers exited 0.")
    failed: int = Field(default=0, description="Pods that failed.")


class Progress(StatusModel):
    """The latest progress heartbeat of rank 0."""

    step: int | None = Field(
        default=None, description="Optimizer steps done; environment steps over all ranks for reinforcement-learning."
    )
    total_steps: int | None = Field(
        default=None, description="Steps planned (reinforcementLearning.totalSteps for reinforcement-learning)."
    )
    epoch: int | None = Field(default=None, description="Current epoch.")
    percent: int | None = Field(default=None, description="step / totalSteps, in percent.")
    loss: float | None = Field(
        default=None, description="Latest training loss (PPO's total loss for reinforcement-learning)."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Latest metrics of rank 0: validation metrics such as validationAccuracy; for "
        "reinforcement-learning episodicReturn (mean over the latest episodes), policyLoss, valueLoss, entropy, "
        "stepsPerSecond and, once training ends, evaluationReturn (mean return of the deterministic policy).",
    )
    samples_per_second: float | None = Field(default=None, description="Training throughput of the gang.")
    eta_seconds: int | None = Field(default=None, description="Estimated seconds to the end.")
    last_heartbeat_time: datetime | None = Field(default=None, description="When rank 0 last reported.")
    last_step_time: datetime | None = Field(
        default=None,
        description="When rank 0 first reported its current step: the progress failurePolicy.hangTimeoutSeconds "
        "waits for (a heartbeat that repeats its step, as a rank blocked in a collective may send, is no progress).",
    )


class CheckpointStatus(StatusModel):
    """The newest checkpoint rank 0 reported."""

    path: str = Field(description="Path of the checkpoint inside the checkpoint claim.")
    step: int | None = Field(default=None, description="Optimizer step of the checkpoint.")
    time: datetime | None = Field(default=None, description="When it was written.")


class ModelStatus(StatusModel):
    """The exported model, ready for an InferenceService."""

    claim_name: str = Field(description="Claim that holds the model.")
    path: str = Field(description="Folder of the final model (model.pt and manifest.json) inside the claim.")
    best_path: str | None = Field(default=None, description="Folder of the best-validation model, if exported.")
    step: int | None = Field(default=None, description="Training step of the export.")
    size_bytes: int | None = Field(default=None, description="Size of the exported weights, to size start-up probes.")
    task: Task | None = Field(
        default=None, description="The task that exported it; language-model gets the OpenAI routes."
    )


class SnapshotStatus(StatusModel):
    """The VolumeSnapshot of the checkpoint claim taken when the job succeeded, as its controller reports it."""

    name: str = Field(description="Name of the VolumeSnapshot, in the job's namespace.")
    claim_name: str = Field(description="The checkpoint claim it is a snapshot of.")
    volume_snapshot_class_name: str | None = Field(
        default=None, description="The VolumeSnapshotClass asked for; unset for the default class."
    )
    ready_to_use: bool | None = Field(
        default=None,
        description="The snapshot controller's readyToUse: true once the snapshot can restore a claim; "
        "unset while no controller has reported (pending).",
    )
    creation_time: datetime | None = Field(
        default=None, description="When the storage system cut the snapshot (the controller's creationTime)."
    )
    restore_size: str | None = Field(default=None, description="Smallest size of a claim restored from it.")
    error: str | None = Field(default=None, description="The snapshot controller's latest error, if any.")


class TrainingJobStatus(StatusModel):
    """What the operator observed. Written only by the operator."""

    phase: TrainingPhase = Field(default="Pending", description="Summary for kubectl get.")
    reason: str | None = Field(
        default=None, description="CamelCase reason of the phase (BackoffLimitExceeded, WaitingForGang, ...)."
    )
    conditions: Conditions = Field(default_factory=list, description="Conditions in metav1.Condition form.")
    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    replica_counts: ReplicaCounts = Field(default_factory=ReplicaCounts, description="Pods by state.")
    ready: str | None = Field(default=None, description="Running/desired ranks, for kubectl get.")
    selector: str | None = Field(default=None, description="Label selector of the gang's pods (scale subresource).")
    restarts: int = Field(default=0, description="Whole-gang restarts so far (failures, against backoffLimit).")
    preemptions: int = Field(
        default=0,
        description="Times the gang scheduler preempted the gang (Kueue deleted it); not counted against backoffLimit.",
    )
    gang_attempt: int = Field(default=0, description="Which gang (0 first) the current pods belong to.")
    start_time: datetime | None = Field(default=None, description="When the first gang started running.")
    completion_time: datetime | None = Field(default=None, description="When the job succeeded or failed.")
    last_restart_time: datetime | None = Field(default=None, description="When the gang was last replaced.")
    gang_created_time: datetime | None = Field(
        default=None, description="When every rank of the current gang had been created."
    )
    gang_running_time: datetime | None = Field(
        default=None, description="When every rank of the current gang was first seen running."
    )
    progress: Progress | None = Field(default=None, description="Rank 0's latest heartbeat.")
    checkpoint: CheckpointStatus | None = Field(default=None, description="The latest checkpoint.")
    model: ModelStatus | None = Field(default=None, description="The exported model.")
    snapshot: SnapshotStatus | None = Field(
        default=None, description="The VolumeSnapshot of the checkpoint claim (storage.checkpoints.snapshotOnSuccess)."
    )


class TrainingJob(ApiModel):
    """A PyTorch DDP training job run as a gang of pods."""

    api_version: Literal["aidc.io/v1alpha1"] = Field(default="aidc.io/v1alpha1", description="aidc.io/v1alpha1")
    kind: Literal["TrainingJob"] = Field(default="TrainingJob", description="TrainingJob")
    metadata: Annotated[dict[str, Any], Field(description="Standard object metadata.")] = {}
    spec: TrainingJobSpec = Field(description="The desired gang.")
    status: TrainingJobStatus | None = Field(default=None, description="What the operator observed.")

    cel_rules = (NAME_RULE,)
