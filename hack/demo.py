"""``make demo``: the loopback control plane, the operator, and the example TrainingJobs.

What is real: etcd, the API server, controller manager and scheduler, the operator (its own
process, as in production), the CRDs with their validation, the gang of pods with its
rendezvous Service and checkpoint claim, status and events. What is not (yet): the pods are
played by kwok, which runs no process, so no model is trained here; the demo tells kwok to end
each rank with exit code 0 a few seconds after it starts. The local node agent that runs the
trainer for real is still to come (see the README).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aidc_testbed import Testbed, TestbedConfig
from aidc_testbed.ports import free_ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOBS = ["examples/trainingjob-digits-cpu.yaml", "examples/trainingjob-llm-2x8gpu.yaml"]
EXIT_AFTER = "8s"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def kubectl(kubeconfig: Path, *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], check=True, text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def start_operator(state_dir: Path, kubeconfig: Path) -> int:
    pid_file = state_dir / "operator.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 0)
            return pid
        except ProcessLookupError:
            pass
    log = (state_dir / "logs").joinpath("operator.log").open("ab")
    metrics, health = free_ports(2)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "AIDC_METRICS_PORT": str(metrics),
           "AIDC_HEALTH_PORT": str(health), "AIDC_TRAINER_IMAGE": "aidc/trainer:dev-cpu"}
    process = subprocess.Popen([str(BIN / "aidc"), "run", "--standalone"], env=env, stdout=log, stderr=log,
                               start_new_session=True)
    pid_file.write_text(str(process.pid))
    (state_dir / "operator.ports").write_text(f"metrics={env['AIDC_METRICS_PORT']} health={env['AIDC_HEALTH_PORT']}\n")
    return process.pid


def stop_operator(state_dir: Path) -> None:
    pid_file = state_dir / "operator.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        pid_file.unlink()


def finish_running_ranks(kubeconfig: Path, namespace: str) -> None:
    """Stand-in for the trainer: each running rank exits 0 a few seconds after it started."""
    names = kubectl(kubeconfig, "-n", namespace, "get", "pods", "-l", "aidc.io/job-name",
                    "--field-selector=status.phase=Running", "-o", "name", capture=True).split()
    for name in names:
        kubectl(kubeconfig, "-n", namespace, "annotate", "--overwrite", name,
                "aidc.io/kwok-exit-code=0", f"aidc.io/kwok-exit-after={EXIT_AFTER}", capture=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=ROOT / ".cache" / "testbed")
    parser.add_argument("--down", action="store_true", help="stop the operator and the control plane")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    if args.down:
        stop_operator(args.dir)
        bed = Testbed(TestbedConfig(state_dir=args.dir))
        if bed.is_running():
            bed.stop()
        return 0

    say("1/4 control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler, kwok (4 nodes x 8 GPUs)")
    bed = Testbed(TestbedConfig(state_dir=args.dir))
    if not bed.is_running():
        bed.start()
    kubeconfig = bed.kubeconfig
    kubectl(kubeconfig, "get", "nodes", "-L", "nvidia.com/gpu.present")

    say("2/4 CRDs, the heartbeat admission policy, and the operator (its own process; log in "
        f"{args.dir}/logs/operator.log)")
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/trainingjobs.aidc.io", "crd/inferenceservices.aidc.io")
    kubectl(kubeconfig, "apply", "--server-side", "-f",
            str(ROOT / "charts/aidc-operator/templates/heartbeat-policy.yaml"))
    pid = start_operator(args.dir, kubeconfig)
    print(f"operator pid {pid}")

    say("3/4 the example TrainingJobs (a data claim for the language model first)")
    namespace = "default"
    claim = ('{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"corpora"},'
             '"spec":{"accessModes":["ReadWriteMany"],"resources":{"requests":{"storage":"10Gi"}}}}')
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"], input=claim, text=True,
                   check=True)
    for job in JOBS:
        kubectl(kubeconfig, "-n", namespace, "apply", "-f", str(ROOT / job))

    say(f"4/4 watching `kubectl get tj` (kwok plays the pods: each rank exits 0 {EXIT_AFTER} after it runs)")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        finish_running_ranks(kubeconfig, namespace)
        table = kubectl(kubeconfig, "-n", namespace, "get", "tj", capture=True)
        print(table, end="", flush=True)
        phases = kubectl(kubeconfig, "-n", namespace, "get", "tj", "-o", "jsonpath={.items[*].status.phase}",
                         capture=True).split()
        if len(phases) == len(JOBS) and all(p in ("Succeeded", "Failed") for p in phases):
            break
        time.sleep(3)
    else:
        print("the jobs did not finish in time; see the operator log", file=sys.stderr)
        return 1
    kubectl(kubeconfig, "-n", namespace, "get", "tj,pods,svc,pvc", "-l", "app.kubernetes.io/part-of=aidc")
    say("look around, then stop")
    print(f"export KUBECONFIG={kubeconfig}\n"
          "kubectl get tj -o wide; kubectl describe tj digits; kubectl get events --field-selector "
          "involvedObject.kind=TrainingJob\n"
          f"operator log: {args.dir}/logs/operator.log   metrics/health ports: {args.dir}/operator.ports\n"
          "stop everything: make demo-down")
    return 0 if all(p == "Succeeded" for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
