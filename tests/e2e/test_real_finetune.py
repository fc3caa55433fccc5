"""Fine-tuning on the real node: a pretrained model on a data claim, LoRA on prompt/response pairs by a
gang of two trainer-image ranks, and the merged export served by an InferenceService to a client pod.

The "pretrained" model is a tiny Llama made from a config (tests/trainer/tiny_pretrained.py) and
written into the data claim's volume as save_pretrained writes it: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aidc_testbed.realnodes import placement
from tests.cluster.resources import condition_is, create, get
from tests.e2e.conftest import Release
from tests.e2e.test_real_nodes import ISVC, TJ, claim_folder, finished, run_client_pod, training_job, unique
from tests.trainer.tiny_pretrained import save_tiny_pretrained, write_corpus

pytestmark = pytest.mark.e2e
PROMPT = "what is the color of the blue ball"

ASK = """
import json, urllib.request
body = {"inputs": [{"name": "input_ids", "shape": [1, LENGTH], "datatype": "INT64", "data": IDS}]}
request = urllib.request.Request("URL/v2/models/NAME/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as response:
    outputs = {o["name"]: o for o in json.load(response)["outputs"]}
completion = {"model": "NAME", "prompt": "PROMPT", "max_tokens": 1, "temperature": 0}
request = urllib.request.Request("OPENAI/completions", data=json.dumps(completion).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as response:
    text = json.load(response)["choices"][0]["text"]
print(json.dumps({"next": outputs["next_token"]["data"][0], "text": text}))
"""


def _data_claim(kube: client.ApiClient, namespace: str, name: str, wait_for: Callable[..., Any]) -> Path:
    """A bound claim holding the tiny pretrained model and the datasets, readable by uid 1000."""
    claim = {"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                   "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    client.CoreV1Api(kube).create_namespaced_persistent_volume_claim(namespace, claim)
    folder = wait_for(lambda: claim_folder(kube, namespace, name), ignore=(Exception,), timeout=60)
    save_tiny_pretrained(folder / "tiny-llama")
    write_corpus(folder)
    for root, directories, files in os.walk(folder):
        for entry in (*directories, *files):
            os.chmod(Path(root) / entry, 0o755 if entry in directories else 0o644)
    return folder


def test_lora_fine_tunes_a_pretrained_model_from_a_claim_and_its_merged_export_is_served(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any]
) -> None:
    from transformers import AutoTokenizer

    namespace, job = release.watched, unique("finetune")
    folder = _data_claim(kube, namespace, f"{job}-data", wait_for)
    body = training_job(job, max_steps=200, every_steps=50)
    lora = {"rank": 8, "alpha": 16, "dropout": 0.0,
            "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]}  # fmt: skip
    body["spec"]["trainer"] = {
        "task": "language-model", "dataset": {"source": "jsonl", "path": "pairs.jsonl"}, "epochs": 12,
        "batchSize": 4, "learningRate": 0.02, "gradientClipNorm": 1.0, "seed": 0,
        "languageModel": {"contextLength": 12, "pretrained": {"path": "tiny-llama", "lora": lora}},
    }  # fmt: skip
    body["spec"]["storage"]["data"] = {"claimName": f"{job}-data"}
    body["spec"]["resources"] = {"cpu": "500m", "memory": "1536Mi"}  # torch and transformers
    create(kube, namespace, TJ, body)
    done = finished(kube, namespace, job, wait_for)
    assert condition_is(done, "Succeeded"), json.dumps(done["status"]["conditions"])
    export = claim_folder(kube, namespace, f"{job}-checkpoints") / job / "export" / "final"
    assert {p.name for p in export.iterdir()} >= {"model", "adapter", "manifest.json"}

    name = unique("colors")
    isvc = {"apiVersion": "aidc.io/v1alpha1", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"model": {"fromTrainingJob": {"name": job}}, "placement": placement(),
                     "resources": {"cpu": "250m", "memory": "1Gi"}}}  # fmt: skip
    create(kube, namespace, ISVC, isvc)
    ready = wait_for(lambda: get(kube, namespace, ISVC, name), until=lambda s: condition_is(s, "Ready"), timeout=180)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tiny-llama", local_files_only=True)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    from aidc_testbed.release import image_refs

    assert ready["status"]["protocol"] == "v2+openai" and ready["status"]["model"]["task"] == "language-model"
    script = ASK.replace("OPENAI", ready["status"]["openaiUrl"]).replace("URL", ready["status"]["url"])
    script = script.replace("NAME", name).replace("PROMPT", PROMPT)
    script = script.replace("LENGTH", str(len(ids))).replace("IDS", json.dumps(ids))
    printed = run_client_pod(kube, namespace, image_refs(testbed.config)["aidc-trainer"], script, wait_for)
    answer = json.loads(printed.strip().splitlines()[-1])
    assert tokenizer.decode([answer["next"]]) == "blue", answer
    assert answer["text"].strip() == "blue", answer  # the same model on the OpenAI routes
