"""Resources that must be rejected, with the words the rejection must contain.

One table serves two tests: the pydantic models reject each case (unit), and the API server
rejects the same case through the generated CRD's schema or CEL rules (cluster). If the two
ever disagree, the models and the CRDs have drifted.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.factories import inference_service_body, training_job_body

TRAINING_JOB: dict[str, Any] = training_job_body("ok")
INFERENCE_SERVICE: dict[str, Any] = inference_service_body("ok")


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


_DELETE = object()
FSDP: dict[str, Any] = {"parallelism": {"strategy": "FSDP"}}
FINE_TUNING: dict[str, Any] = _with(
    _with(
        TRAINING_JOB,
        "spec.trainer",
        {
            "task": "language-model",
            "dataset": {"source": "jsonl", "path": "pairs.jsonl"},
            "languageModel": {"contextLength": 512, "pretrained": {"path": "models/qwen", "lora": {"rank": 16}}},
        },
    ),
    "spec.storage.data",
    {"claimName": "corpora"},
)

PLACEMENT = "spec.schedulingPolicy.placement"
AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100", "H200"]},
                        {"key": "gpu-memory-gib", "operator": "Gt", "values": ["40"]},
                        {"key": "spot", "operator": "DoesNotExist"},
                    ]
                }
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
        ],
    },
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"team": "vision"}},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    },
}
RL_TRAINER: dict[str, Any] = {
    "task": "reinforcement-learning",
    "reinforcementLearning": {"environment": {"gymnasiumId": "CartPole-v1"}},
}


def _rl(**block: Any) -> dict[str, Any]:
    """A TrainingJob of the reinforcement-learning task whose block has ``block`` (camelCase keys)."""
    return _with(TRAINING_JOB, "spec.trainer", {**RL_TRAINER, "reinforcementLearning": block})


SECRET_ENV = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}}


def _requirement(operator: str, values: list[str] | None) -> dict[str, Any]:
    """An affinity whose one node requirement has ``operator`` and ``values``."""
    requirement: dict[str, Any] = {"key": "pool", "operator": operator}
    if values is not None:
        requirement["values"] = values
    terms = [{"matchExpressions": [requirement]}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


# (id, body) that must be admitted: both tests of the table also check these go through
VALID: list[tuple[str, dict[str, Any]]] = [
    ("classifier-defaults", TRAINING_JOB),
    ("language-model-without-dataset", _with(TRAINING_JOB, "spec.trainer", {"task": "language-model"})),
    ("gan-without-dataset", _with(TRAINING_JOB, "spec.trainer", {"task": "gan"})),
    ("language-model-fsdp", _with(TRAINING_JOB, "spec.trainer", {"task": "language-model", **FSDP})),
    (
        "language-model-fsdp-bf16-activation-checkpointing",
        _with(
            TRAINING_JOB,
            "spec.trainer",
            {
                "task": "language-model",
                "precision": "bf16",
                "parallelism": {"strategy": "FSDP", "activationCheckpointing": True},
            },
        ),
    ),
    ("language-model-pretrained-lora-jsonl", FINE_TUNING),
    (
        "language-model-pretrained-absolute-without-data-claim",
        _with(
            TRAINING_JOB,
            "spec.trainer",
            {"task": "language-model", "languageModel": {"pretrained": {"path": "/models/tiny"}}},
        ),
    ),
    ("classifier-ddp", _with(TRAINING_JOB, "spec.trainer", {"task": "classifier", "parallelism": {"strategy": "DDP"}})),
    ("rl-gymnasium-defaults", _with(TRAINING_JOB, "spec.trainer", RL_TRAINER)),
    ("rl-namespaced-gymnasium-id", _rl(environment={"gymnasiumId": "ALE/Pong-v5"})),
    ("rl-entry-point", _rl(environment={"entryPoint": "my_envs.grid:GridWorld"})),
    (
        "rl-every-field",
        _rl(
            environment={"gymnasiumId": "Pendulum-v1"},
            totalSteps=300000,
            envsPerRank=256,
            rolloutSteps=8192,
            evaluationEpisodes=0,
            ppo={
                "clip": 1,
                "gaeLambda": 0,
                "gamma": 1,
                "epochs": 100,
                "minibatches": 1024,
                "entropyCoef": 0,
                "valueCoef": 0,
                "maxGradNorm": 0.1,
                "clipValueLoss": False,
            },
        ),
    ),
    ("inference-service", INFERENCE_SERVICE),
    (
        "quantities",
        _with(
            TRAINING_JOB,
            "spec.resources",
            {"cpu": "500m", "cpuLimit": 4, "memory": "1.5Gi", "sharedMemory": "1e9", "gpus": 0},
        ),
    ),
    ("checkpoint-size-plain-number", _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"size": "107374182400"}})),
    ("affinity", _with(TRAINING_JOB, f"{PLACEMENT}.affinity", AFFINITY)),
    (
        "tolerations",
        _with(
            TRAINING_JOB,
            f"{PLACEMENT}.tolerations",
            [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "pool", "operator": "Equal", "value": "gpu"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 30},
                {"operator": "Exists"},
            ],
        ),
    ),
    ("env-from-secret", _with(TRAINING_JOB, "spec.env", [SECRET_ENV, {"name": "A.b-c_1", "value": "x=y"}])),
    (
        "procs-equal-to-gpus",
        _with(TRAINING_JOB, "spec", {**TRAINING_JOB["spec"], "procsPerReplica": 8, "resources": {"gpus": 8}}),
    ),
    ("cpu-procs-without-gpus", _with(TRAINING_JOB, "spec.procsPerReplica", 4)),
    (
        "dotted-data-claim",
        _with(TRAINING_JOB, "spec.storage", {"data": {"claimName": "corpora.v2", "subPath": "en/2026"}}),
    ),
    (
        "language-model-default-learning-rate",
        _with(TRAINING_JOB, "spec.trainer", {"task": "language-model", "epochs": 1}),
    ),
    (
        "snapshot-on-success-default-class",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"size": "1Gi", "snapshotOnSuccess": {}}}),
    ),
    (
        "inference-service-allow-from",
        _with(
            INFERENCE_SERVICE,
            "spec.network",
            {
                "allowFrom": [
                    {"namespaceSelector": {}},
                    {
                        "namespaceSelector": {"matchLabels": {"team": "vision"}},
                        "podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["api"]}]},
                    },
                ]
            },
        ),
    ),
    ("inference-kubernetes-auth", _with(INFERENCE_SERVICE, "spec.auth", {"kubernetes": {}})),
    (
        "inference-language-model-on-a-claim",
        _with(INFERENCE_SERVICE, "spec.model", {"storageUri": "pvc://models/llm/v1", "task": "language-model"}),
    ),
    (
        "inference-api-key-and-tls",
        _with(
            _with(INFERENCE_SERVICE, "spec.auth", {"apiKey": {"secretName": "keys", "key": "api-key"}}),
            "spec.tls",
            {"secretName": "serving-tls"},
        ),
    ),
]

# (id, body, words that the message must contain: the field's name and the problem)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "auth-both",
        _with(INFERENCE_SERVICE, "spec.auth", {"kubernetes": {}, "apiKey": {"secretName": "k", "key": "k"}}),
        ["auth", "exactly one of kubernetes or apiKey"],
    ),
    ("auth-neither", _with(INFERENCE_SERVICE, "spec.auth", {}), ["auth", "exactly one of kubernetes or apiKey"]),
    ("api-key-without-key", _with(INFERENCE_SERVICE, "spec.auth", {"apiKey": {"secretName": "k"}}), ["key"]),
    ("tls-without-secret", _with(INFERENCE_SERVICE, "spec.tls", {}), ["secretName"]),
    ("zero-replicas", _with(TRAINING_JOB, "spec.replicas", 0), ["replicas"]),
    ("unknown-task", _with(TRAINING_JOB, "spec.trainer.task", "poetry"), ["task"]),
    ("no-trainer-no-command", _with(TRAINING_JOB, "spec.trainer", _DELETE), ["spec.trainer is required"]),
    (
        "claim-named-and-sized",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"claimName": "mine", "size": "10Gi"}}),
        ["either claimName", "or size"],
    ),
    (
        "claim-neither",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"reclaimPolicy": "Delete"}}),
        ["set claimName (an existing claim) or size"],
    ),
    (
        "npz-without-path",
        _with(TRAINING_JOB, "spec.trainer", {"task": "classifier", "dataset": {"source": "npz"}}),
        ["dataset.path is required"],
    ),
    (
        "lm-on-digits",
        _with(TRAINING_JOB, "spec.trainer", {"task": "language-model", "dataset": {"source": "digits"}}),
        ["language-model task"],
    ),
    (
        "heads-not-dividing",
        _with(
            TRAINING_JOB,
            "spec.trainer",
            {"task": "language-model", "dataset": {"source": "synthetic"}, "languageModel": {"heads": 3}},
        ),
        ["multiple of languageModel.heads"],
    ),
    (
        "jsonl-without-pretrained",
        _with(FINE_TUNING, "spec.trainer.languageModel", {}),
        ["a jsonl dataset (prompt/response pairs) needs trainer.languageModel.pretrained"],
    ),
    (
        "pretrained-without-data-claim",
        _with(FINE_TUNING, "spec.storage.data", _DELETE),
        ["pretrained.path is on the data claim"],
    ),
    ("lora-rank-zero", _with(FINE_TUNING, "spec.trainer.languageModel.pretrained.lora.rank", 0), ["rank"]),
    ("pretrained-without-path", _with(FINE_TUNING, "spec.trainer.languageModel.pretrained", {}), ["path"]),
    (
        "jsonl-on-classifier",
        _with(TRAINING_JOB, "spec.trainer", {"task": "classifier", "dataset": {"source": "jsonl", "path": "a.jsonl"}}),
        ["needs trainer.languageModel.pretrained"],
    ),
    (
        "fsdp-on-classifier",
        _with(TRAINING_JOB, "spec.trainer", {"task": "classifier", **FSDP}),
        ["parallelism.strategy FSDP is for the language-model task"],
    ),
    (
        "fsdp-in-fp16",
        _with(TRAINING_JOB, "spec.trainer", {"task": "language-model", "precision": "fp16", **FSDP}),
        ["FSDP trains in bf16 or fp32"],
    ),
    (
        "unknown-strategy",
        _with(TRAINING_JOB, "spec.trainer", {"task": "language-model", "parallelism": {"strategy": "TP"}}),
        ["strategy"],
    ),
    (
        "rl-without-block",
        _with(TRAINING_JOB, "spec.trainer", {"task": "reinforcement-learning"}),
        ["reinforcementLearning is required for the reinforcement-learning task"],
    ),
    (
        "rl-block-on-classifier",
        _with(TRAINING_JOB, "spec.trainer", {**RL_TRAINER, "task": "classifier"}),
        ["reinforcementLearning is only for the reinforcement-learning task"],
    ),
    (
        "rl-with-dataset",
        _with(TRAINING_JOB, "spec.trainer", {**RL_TRAINER, "dataset": {"source": "digits"}}),
        ["dataset is not read by the reinforcement-learning task"],
    ),
    ("rl-without-environment", _rl(totalSteps=10), ["environment"]),
    ("rl-environment-empty", _rl(environment={}), ["exactly one of gymnasiumId or entryPoint"]),
    (
        "rl-environment-both",
        _rl(environment={"gymnasiumId": "CartPole-v1", "entryPoint": "envs:Grid"}),
        ["exactly one of gymnasiumId or entryPoint"],
    ),
    ("rl-gymnasium-id-without-version", _rl(environment={"gymnasiumId": "CartPole"}), ["gymnasiumId"]),
    ("rl-entry-point-without-class", _rl(environment={"entryPoint": "my_envs.grid"}), ["entryPoint"]),
    ("rl-entry-point-path", _rl(environment={"entryPoint": "/app/envs.py:Grid"}), ["entryPoint"]),
    ("rl-zero-total-steps", _rl(**RL_TRAINER["reinforcementLearning"], totalSteps=0), ["totalSteps"]),
    ("rl-too-many-envs", _rl(**RL_TRAINER["reinforcementLearning"], envsPerRank=257), ["envsPerRank"]),
    ("rl-zero-rollout", _rl(**RL_TRAINER["reinforcementLearning"], rolloutSteps=0), ["rolloutSteps"]),
    (
        "rl-negative-evaluation",
        _rl(**RL_TRAINER["reinforcementLearning"], evaluationEpisodes=-1),
        ["evaluationEpisodes"],
    ),
    ("rl-zero-clip", _rl(**RL_TRAINER["reinforcementLearning"], ppo={"clip": 0}), ["clip"]),
    ("rl-gamma-above-one", _rl(**RL_TRAINER["reinforcementLearning"], ppo={"gamma": 1.5}), ["gamma"]),
    ("rl-negative-entropy", _rl(**RL_TRAINER["reinforcementLearning"], ppo={"entropyCoef": -0.1}), ["entropyCoef"]),
    ("rl-zero-grad-norm", _rl(**RL_TRAINER["reinforcementLearning"], ppo={"maxGradNorm": 0}), ["maxGradNorm"]),
    (
        "rl-value-clip-not-bool",
        _rl(**RL_TRAINER["reinforcementLearning"], ppo={"clipValueLoss": "yes"}),
        ["clipValueLoss"],
    ),
    (
        "rl-minibatches-not-dividing",
        _rl(**RL_TRAINER["reinforcementLearning"], envsPerRank=3, rolloutSteps=5, ppo={"minibatches": 4}),
        ["ppo.minibatches must divide envsPerRank * rolloutSteps"],
    ),
    ("bad-precision", _with(TRAINING_JOB, "spec.trainer.precision", "int4"), ["precision"]),
    ("negative-backoff", _with(TRAINING_JOB, "spec.failurePolicy", {"backoffLimit": -1}), ["backoffLimit"]),
    (
        "snapshot-class-not-a-name",
        _with(
            TRAINING_JOB,
            "spec.storage",
            {"checkpoints": {"claimName": "mine", "snapshotOnSuccess": {"volumeSnapshotClassName": "Fast_Snaps"}}},
        ),
        ["volumeSnapshotClassName"],
    ),
    ("bad-gang-scheduler", _with(TRAINING_JOB, "spec.schedulingPolicy", {"gangScheduler": "Slurm"}), ["gangScheduler"]),
    ("job-name-too-long", _with(TRAINING_JOB, "metadata.name", "a" * 53), ["metadata.name", "52"]),
    ("job-name-starts-with-digit", _with(TRAINING_JOB, "metadata.name", "1abc"), ["metadata.name"]),
    (
        "env-value-and-from",
        _with(TRAINING_JOB, "spec.env", [{"name": "A", "value": "1", "valueFrom": {}}]),
        ["valueFrom"],
    ),
    (
        "max-below-min",
        _with(INFERENCE_SERVICE, "spec.autoscaling", {"minReplicas": 3, "maxReplicas": 2}),
        ["maxReplicas must be greater than or equal to minReplicas"],
    ),
    (
        "storage-uri-not-pvc",
        _with(INFERENCE_SERVICE, "spec.model", {"storageUri": "s3://bucket/model"}),
        ["storageUri"],
    ),
    (
        "both-model-sources",
        _with(INFERENCE_SERVICE, "spec.model", {"storageUri": "pvc://models/a", "fromTrainingJob": {"name": "x"}}),
        ["either fromTrainingJob or storageUri"],
    ),
    (
        "replicas-and-autoscaling",
        _with(
            INFERENCE_SERVICE, "spec", {**INFERENCE_SERVICE["spec"], "replicas": 2, "autoscaling": {"maxReplicas": 4}}
        ),
        ["either replicas or autoscaling"],
    ),
    ("zero-batch", _with(INFERENCE_SERVICE, "spec.batching", {"maxBatchSize": 0}), ["maxBatchSize"]),
    (
        "task-of-a-training-jobs-export",
        _with(INFERENCE_SERVICE, "spec.model", {"fromTrainingJob": {"name": "x"}, "task": "language-model"}),
        ["task is for a storageUri model"],
    ),
    (
        "unknown-model-task",
        _with(INFERENCE_SERVICE, "spec.model", {"storageUri": "pvc://models/a", "task": "llm"}),
        ["task"],
    ),
    (
        "no-model-source",
        _with(INFERENCE_SERVICE, "spec.model", {"name": "digits"}),
        ["set fromTrainingJob", "or storageUri"],
    ),
    # quantities the pod would refuse on every create
    (
        "memory-in-gb",
        _with(TRAINING_JOB, "spec.resources", {"memory": "16GB"}),
        ["spec.resources.memory", "Gi, not GB"],
    ),
    ("cpu-lots", _with(TRAINING_JOB, "spec.resources", {"cpu": "lots"}), ["spec.resources.cpu", "quantity"]),
    (
        "negative-cpu-limit",
        _with(TRAINING_JOB, "spec.resources", {"cpuLimit": -1}),
        ["resources.cpuLimit", "non-negative"],
    ),
    (
        "shm-with-space",
        _with(INFERENCE_SERVICE, "spec.resources", {"sharedMemory": "1 Gi"}),
        ["resources.sharedMemory"],
    ),
    (
        "checkpoint-size-not-quantity",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"size": "ten gigs"}}),
        ["storage.checkpoints.size", "quantity"],
    ),
    # the core types, typed: what the pod validation would refuse
    (
        "toleration-bad-operator",
        _with(TRAINING_JOB, f"{PLACEMENT}.tolerations", [{"key": "gpu", "operator": "Gt"}]),
        ["tolerations[0].operator"],
    ),
    (
        "toleration-exists-with-value",
        _with(TRAINING_JOB, f"{PLACEMENT}.tolerations", [{"key": "gpu", "operator": "Exists", "value": "yes"}]),
        ["tolerations[0]", "operator Exists has no value"],
    ),
    (
        "toleration-without-key",
        _with(INFERENCE_SERVICE, "spec.placement.tolerations", [{"value": "x"}]),
        ["tolerations[0]", "without a key needs operator Exists"],
    ),
    (
        "toleration-seconds-without-no-execute",
        _with(TRAINING_JOB, f"{PLACEMENT}.tolerations", [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]),
        ["tolerations[0]", "tolerationSeconds needs effect NoExecute"],
    ),
    (
        "toleration-bad-effect",
        _with(TRAINING_JOB, f"{PLACEMENT}.tolerations", [{"key": "a", "effect": "NoRun"}]),
        ["tolerations[0].effect"],
    ),
    (
        "toleration-key-with-space",
        _with(TRAINING_JOB, f"{PLACEMENT}.tolerations", [{"key": "my key", "operator": "Exists"}]),
        ["tolerations[0].key", "should match"],
    ),
    (
        "env-name-with-equals",
        _with(TRAINING_JOB, "spec.env", [{"name": "A=B", "value": "1"}]),
        ["spec.env[0].name", "other than '='"],
    ),
    (
        "env-value-from-two-sources",
        _with(
            INFERENCE_SERVICE,
            "spec.env",
            [{"name": "A", "valueFrom": {**SECRET_ENV["valueFrom"], "fieldRef": {"fieldPath": "metadata.name"}}}],
        ),
        ["spec.env[0].valueFrom", "exactly one of fieldRef"],
    ),
    (
        "env-secret-without-key",
        _with(TRAINING_JOB, "spec.env", [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "hub"}}}]),
        ["spec.env[0].valueFrom.secretKeyRef.key"],
    ),
    (
        "affinity-bad-operator",
        _with(TRAINING_JOB, f"{PLACEMENT}.affinity", _requirement("Near", ["a"])),
        ["matchExpressions[0].operator"],
    ),
    (
        "affinity-in-without-values",
        _with(TRAINING_JOB, f"{PLACEMENT}.affinity", _requirement("In", None)),
        ["matchExpressions[0]", "operators In and NotIn need values"],
    ),
    (
        "affinity-exists-with-values",
        _with(TRAINING_JOB, f"{PLACEMENT}.affinity", _requirement("Exists", ["a"])),
        ["matchExpressions[0]", "operators Exists and DoesNotExist take no values"],
    ),
    (
        "affinity-gt-not-integer",
        _with(TRAINING_JOB, f"{PLACEMENT}.affinity", _requirement("Gt", ["big"])),
        ["matchExpressions[0]", "need exactly one integer value"],
    ),
    (
        "affinity-no-terms",
        _with(
            TRAINING_JOB,
            f"{PLACEMENT}.affinity",
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        ),
        ["nodeSelectorTerms"],
    ),
    (
        "affinity-weight-zero",
        _with(
            TRAINING_JOB,
            f"{PLACEMENT}.affinity",
            {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}
                    ]
                }
            },
        ),
        ["preferredDuringSchedulingIgnoredDuringExecution[0].weight"],
    ),
    (
        "pod-affinity-without-topology-key",
        _with(
            TRAINING_JOB,
            f"{PLACEMENT}.affinity",
            {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}},
        ),
        ["requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"],
    ),
    # claims and paths
    (
        "data-claim-with-slash",
        _with(TRAINING_JOB, "spec.storage", {"data": {"claimName": "team/corpora"}}),
        ["spec.storage.data.claimName", "should match"],
    ),
    (
        "checkpoint-claim-uppercase",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"claimName": "Checkpoints"}}),
        ["spec.storage.checkpoints.claimName", "should match"],
    ),
    (
        "data-sub-path-escapes",
        _with(TRAINING_JOB, "spec.storage", {"data": {"claimName": "corpora", "subPath": "../other"}}),
        ["spec.storage.data.subPath", "without '..'"],
    ),
    # one process per GPU
    (
        "more-procs-than-gpus",
        _with(TRAINING_JOB, "spec", {**TRAINING_JOB["spec"], "procsPerReplica": 8, "resources": {"gpus": 4}}),
        ["procsPerReplica must not exceed resources.gpus"],
    ),
    (
        "peer-without-selector",
        _with(INFERENCE_SERVICE, "spec.network", {"allowFrom": [{}]}),
        ["namespaceSelector, podSelector or both"],
    ),
    ("allow-from-empty", _with(INFERENCE_SERVICE, "spec.network", {"allowFrom": []}), ["allowFrom"]),
    (
        "selector-in-without-values",
        _with(
            INFERENCE_SERVICE,
            "spec.network",
            {"allowFrom": [{"podSelector": {"matchExpressions": [{"key": "role", "operator": "In"}]}}]},
        ),
        ["matchExpressions[0]", "operators In and NotIn need values"],
    ),
    (
        "selector-bad-operator",
        _with(
            INFERENCE_SERVICE,
            "spec.network",
            {"allowFrom": [{"podSelector": {"matchExpressions": [{"key": "role", "operator": "Gt"}]}}]},
        ),
        ["operator"],
    ),
]
