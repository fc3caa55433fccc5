"""``make demo``: what a kind user does, on this machine: install the operator with Helm, train, serve, ask.

The cluster is the loopback test bed with one real node: etcd, kube-apiserver, controller manager and
scheduler, plus a kubelet with containerd and runc, the CNI bridge, kube-proxy and CoreDNS. The
images are the project's own (``make images`` built them from its Dockerfiles, without Docker). The
operator is installed by its Helm chart and runs as a pod under the restricted Pod Security level;
``examples/trainingjob-digits-cpu.yaml`` trains on two real pods (DDP over gloo, rank 0 found through
the headless Service's DNS name), ``examples/inferenceservice-digits.yaml`` serves the export, and a
client pod sends held-out digits to the InferenceService's Service by its DNS name.

Needs root (the real node: bridges, mounts, cgroups). ``--down`` stops it all and restores the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aidc_testbed import Testbed, TestbedConfig, release

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "examples" / "trainingjob-digits-cpu.yaml"
SERVICE = ROOT / "examples" / "inferenceservice-digits.yaml"
NAMESPACE = "default"
OPERATOR_NAMESPACE = "aidc-system"
RELEASE = "aidc-operator"
ACCURACY_GOAL = 0.95
CLIENT = """
import json, urllib.request
from aidc_trainer.config import parse_config
from aidc_trainer.datasets import load_images
config = parse_config(json.dumps({"task": "classifier", "dataset": {"source": "digits"}, "seed": 0}))
images, labels = load_images(config, None).validation.tensors  # held out: the model never saw them
images, labels = images[:32], labels[:32].tolist()
data = images.flatten().tolist()
body = {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": data}]}
request = urllib.request.Request("URL/v2/models/digits/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    outputs = {o["name"]: o for o in json.load(response)["outputs"]}
print(json.dumps({"predicted": outputs["predicted_class"]["data"], "labels": labels}))
"""


class Steps:
    """Prints each step with the time it took."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def say(self, text: str) -> None:
        now = time.monotonic()
        took = f" (previous step {now - self.last:.0f}s)" if now > self.started + 0.5 else ""
        print(f"\n\033[1m== [{now - self.started:5.0f}s] {text}\033[0m{took}", flush=True)
        self.last = now


def kubectl(kubeconfig: Path, *args: str, capture: bool = False, stdin: str | None = None) -> str:
    result = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], check=True, text=True, input=stdin,
                            stdout=subprocess.PIPE if capture else None)  # fmt: skip
    return result.stdout or ""


def get(kubeconfig: Path, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl(kubeconfig, "-n", namespace, "get", kind, name, "-o", "json",
                                               capture=True))  # fmt: skip
    return found


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def watch_training(kubeconfig: Path, timeout: float) -> dict[str, Any]:
    """Print ``kubectl get tj`` as the job progresses; the finished job."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        table = kubectl(kubeconfig, "-n", NAMESPACE, "get", "tj", "digits", "--no-headers", capture=True)
        if table != last:
            print(table, end="", flush=True)
            last = table
        job = get(kubeconfig, "tj", "digits")
        if job.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return job
        time.sleep(2)
    raise SystemExit("the TrainingJob did not finish in time; see `kubectl describe tj digits` and the operator's logs")


def install_operator(bed: Testbed) -> None:
    values = release.chart_values(bed.config, tainted=False)
    kubectl(bed.kubeconfig, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": OPERATOR_NAMESPACE, "labels": release.RESTRICTED},
    }))  # fmt: skip
    print(f"helm install {RELEASE} charts/aidc-operator -n {OPERATOR_NAMESPACE} "
          + " ".join(f"--set {k}={v}" for k, v in _flat(values)))  # fmt: skip
    release.install(bed.config, bed.kubeconfig, RELEASE, OPERATOR_NAMESPACE, values)
    kubectl(bed.kubeconfig, "-n", OPERATOR_NAMESPACE, "get", "pods", "-o", "wide")


def _flat(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        pairs += _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    return pairs


def ask(bed: Testbed, url: str) -> dict[str, Any]:
    """Run a client pod of the trainer image that posts held-out digits to ``url``; what it got back."""
    image = release.image_refs(bed.config)["aidc-trainer"]
    kubectl(bed.kubeconfig, "-n", NAMESPACE, "delete", "pod", "digits-client", "--ignore-not-found", "--wait")
    kubectl(bed.kubeconfig, "-n", NAMESPACE, "run", "digits-client", f"--image={image}", "--image-pull-policy=Never",
            "--restart=Never", "--command", "--", "python", "-c", CLIENT.replace("URL", url))  # fmt: skip
    for _ in range(120):
        phase = get(bed.kubeconfig, "pod", "digits-client").get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    out = kubectl(bed.kubeconfig, "-n", NAMESPACE, "logs", "digits-client", capture=True)
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return answer


def shutdown(state_dir: Path) -> int:
    Testbed(TestbedConfig(state_dir=state_dir, nodes=0, real_nodes=1)).stop()
    print(f"stopped; the machine is as it was (host journal {state_dir}/host.json undone)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / ".cache" / "testbed")
    parser.add_argument("--down", action="store_true", help="stop the cluster and restore the machine")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.down:
        return shutdown(args.dir)
    steps = Steps()

    steps.say("1/6 a cluster on this machine: control plane on loopback, one real node (kubelet, containerd, CoreDNS)")
    bed = Testbed(TestbedConfig(state_dir=args.dir, nodes=0, real_nodes=1))
    if not bed.is_running():
        bed.start()
    kubeconfig = bed.kubeconfig
    kubectl(kubeconfig, "get", "nodes", "-o", "wide")

    steps.say(f"2/6 helm install charts/aidc-operator -n {OPERATOR_NAMESPACE} (its own image, restricted Pod Security)")
    if release.helm(bed.config, kubeconfig, "status", RELEASE, "-n", OPERATOR_NAMESPACE, check=False).returncode:
        install_operator(bed)

    steps.say(f"3/6 train: kubectl apply -f {JOB.relative_to(ROOT)} (2 ranks, DDP over gloo, checkpoints on a claim)")
    kubectl(kubeconfig, "-n", NAMESPACE, "apply", "-f", str(JOB))
    job = watch_training(kubeconfig, args.timeout)
    kubectl(kubeconfig, "-n", NAMESPACE, "get", "pods", "-l", "aidc.io/job-name=digits", "-o", "wide")
    if job["status"]["phase"] != "Succeeded":
        print(f"training failed: {condition(job, 'Failed').get('message')}", file=sys.stderr)
        return 1
    accuracy = job["status"]["progress"]["metrics"].get("validationAccuracy", 0.0)
    print(f"validation accuracy {accuracy:.1%}; model exported to {job['status'].get('model', {}).get('path')}")
    print("kubectl logs digits-0 | tail -3:")
    print("\n".join(kubectl(kubeconfig, "-n", NAMESPACE, "logs", "digits-0", capture=True).splitlines()[-3:]))

    steps.say(f"4/6 serve: kubectl apply -f {SERVICE.relative_to(ROOT)}")
    kubectl(kubeconfig, "-n", NAMESPACE, "apply", "-f", str(SERVICE))
    kubectl(kubeconfig, "-n", NAMESPACE, "wait", "--for=condition=Ready", "infsvc/digits", "--timeout=300s")
    kubectl(kubeconfig, "-n", NAMESPACE, "get", "infsvc", "digits")
    url = get(kubeconfig, "infsvc", "digits")["status"]["url"]

    steps.say(f"5/6 ask it: a client pod posts 32 held-out digits to {url}/v2/models/digits/infer")
    answer = ask(bed, url)
    predicted, labels = answer["predicted"], answer["labels"]
    for index in range(12):
        mark = "ok" if predicted[index] == labels[index] else "WRONG"
        print(f"  image {index:2d}: true {labels[index]}  predicted {predicted[index]}  {mark}")
    served = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
    print(f"  {served:.0%} of {len(labels)} held-out digits right")

    steps.say("6/6 helm test: the chart's own check, a pod that calls the operator's Service")
    tested = release.helm(bed.config, kubeconfig, "test", RELEASE, "-n", OPERATOR_NAMESPACE, check=False)
    print(tested.stdout.strip() or tested.stderr.strip())

    steps.say("done: look around, then stop")
    print(f"export KUBECONFIG={kubeconfig}\n"
          "kubectl get tj,infsvc,pods -A -o wide; kubectl describe tj digits; kubectl logs digits-0 | tail\n"
          f"kubectl -n {OPERATOR_NAMESPACE} logs deploy/{RELEASE}\n"
          "stop everything and restore the machine: make demo-down")  # fmt: skip
    return 0 if accuracy >= ACCURACY_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
