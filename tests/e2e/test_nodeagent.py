"""The node agent as a kubelet: real processes for the pods the scheduler binds to its node.

Plain pods with small shell and Python commands, so every kubelet duty is checked in seconds:
init containers, environment, volumes and the bound token, addresses and names, probes,
restarts, exit codes and termination messages, graceful deletion, logs through the API server,
and an agent restart that adopts the running processes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc_nodeagent import LocalNode, placement
from tests.e2e.conftest import PodHistory

pytestmark = pytest.mark.e2e
PY = "python"  # the agent runs it with the node's interpreter


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"test": name}},
        "spec": {"restartPolicy": "Never", "containers": containers, **placement(), **spec},
    }


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "python:3.11", "command": [PY, "-c", script], **extra}


def read(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = client.ApiClient.sanitize_for_serialization(
        kube, client.CoreV1Api(kube).read_namespaced_pod(name, namespace)
    )
    return result


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("status", {}).get("phase") in phases


def state(pod_: dict[str, Any], index: int = 0, key: str = "containerStatuses") -> dict[str, Any]:
    """A container's status (an empty one until the agent has written any)."""
    statuses = pod_.get("status", {}).get(key) or []
    found: dict[str, Any] = (
        statuses[index] if len(statuses) > index else {"state": {}, "ready": False, "restartCount": 0}
    )
    return found


def test_a_pod_runs_for_real_with_its_init_containers_environment_volumes_and_token(
    kube: client.ApiClient, namespace: str, local_node: LocalNode, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"level": "debug"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cret"}})
    report = """
import json, os, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
review = b'{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}'
request = urllib.request.Request(
    f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews", data=review,
    headers={"Authorization": "Bearer " + open(sa + "/token").read(), "Content-Type": "application/json"})
me = json.load(urllib.request.urlopen(request, context=ssl.create_default_context(cafile=sa + "/ca.crt")))
print(json.dumps({
    "hostname": socket.gethostname(), "resolved": socket.gethostbyname("solo-0.sub." + os.environ["NS"] + ".svc"),
    "env": {k: os.environ[k] for k in ("POD", "NS", "IP", "NODE", "LEVEL", "KEY")},
    "init": open("/scratch/init.txt").read(), "config": open("/etc/settings/level").read(),
    "secret": open("/etc/creds/key").read(), "namespace": open(sa + "/namespace").read(),
    "uid_via_api": me["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-uid"][0],
}), flush=True)
"""
    env = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
    ]
    mounts = [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "settings", "mountPath": "/etc/settings"},
        {"name": "creds", "mountPath": "/etc/creds"},
    ]
    body = pod(
        "solo",
        [container("main", report, env=env, volumeMounts=mounts)],
        hostname="solo-0",
        subdomain="sub",
        initContainers=[
            {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo one > /scratch/init.txt"],
             "volumeMounts": mounts[:1]},
            {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo two >> /scratch/init.txt"],
             "volumeMounts": mounts[:1]},
        ],
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "settings", "configMap": {"name": "settings"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
        ],
    )  # fmt: skip
    created = core.create_namespaced_pod(namespace, body)
    done = wait_for(lambda: read(kube, namespace, "solo"), until=phase_is("Succeeded", "Failed"), timeout=60)
    log = core.read_namespaced_pod_log("solo", namespace, container="main")  # through the kubelet endpoint
    assert done["status"]["phase"] == "Succeeded", log
    seen = json.loads(log.strip().splitlines()[-1])
    ip = done["status"]["podIP"]
    assert seen["hostname"] == "solo-0" and seen["resolved"] == ip
    assert seen["env"] == {
        "POD": "solo",
        "NS": namespace,
        "IP": ip,
        "NODE": local_node.node_name,
        "LEVEL": "debug",
        "KEY": "s3cret",
    }
    assert seen["init"] == "one\ntwo\n" and seen["config"] == "debug" and seen["secret"] == "s3cret"
    assert seen["uid_via_api"] == created.metadata.uid  # the projected token works, bound to this pod
    assert seen["namespace"] == namespace
    assert [s["state"]["terminated"]["exitCode"] for s in done["status"]["initContainerStatuses"]] == [0, 0]
    conditions = {c["type"]: c["status"] for c in done["status"]["conditions"]}
    assert conditions["Initialized"] == "True" and conditions["Ready"] == "False"


def test_exit_codes_termination_messages_and_restarts(
    kube: client.ApiClient, namespace: str, local_node: LocalNode, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    flaky = (
        "import os, sys; p = '/scratch/ran'; first = not os.path.exists(p); open(p, 'a').close(); "
        "print('attempt'); sys.exit(3 if first else 0)"
    )
    core.create_namespaced_pod(
        namespace,
        pod(
            "flaky",
            [container("main", flaky, volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])],
            restartPolicy="OnFailure",
            volumes=[{"name": "scratch", "emptyDir": {}}],
        ),
    )
    told = "import os, sys; open(os.environ['AIDC_TERMINATION_LOG'], 'w').write('bad input'); sys.exit(65)"
    core.create_namespaced_pod(namespace, pod("told", [container("main", told)]))
    crashed = "import sys; print('line 1'); print('the real cause', flush=True); sys.exit(2)"
    fallback = container("main", crashed, terminationMessagePolicy="FallbackToLogsOnError")
    core.create_namespaced_pod(namespace, pod("crashed", [fallback]))
    missing = {"name": "main", "image": "x", "command": ["/no/such/command"]}
    core.create_namespaced_pod(namespace, pod("missing", [missing]))

    flaky_done = wait_for(lambda: read(kube, namespace, "flaky"), until=phase_is("Succeeded", "Failed"), timeout=60)
    status = state(flaky_done)
    assert flaky_done["status"]["phase"] == "Succeeded" and status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 3 and status["state"]["terminated"]["exitCode"] == 0
    assert core.read_namespaced_pod_log("flaky", namespace, previous=True).strip() == "attempt"

    ended = {name: wait_for(lambda name=name: read(kube, namespace, name), until=phase_is("Failed"), timeout=60)
             for name in ("told", "crashed", "missing")}  # fmt: skip
    assert state(ended["told"])["state"]["terminated"]["message"] == "bad input"
    assert state(ended["told"])["state"]["terminated"]["exitCode"] == 65
    fallen_back = state(ended["crashed"])["state"]["terminated"]
    assert fallen_back["exitCode"] == 2 and "the real cause" in fallen_back["message"]
    start_error = state(ended["missing"])["state"]["terminated"]
    assert start_error["reason"] == "StartError" and "/no/such/command" in start_error["message"]


def test_pods_have_their_own_addresses_ports_and_probes(
    kube: client.ApiClient, namespace: str, local_node: LocalNode, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    # both listen on 8080: each pod has its own network namespace. Ready only once /ready answers,
    # which the server does only after a marker file appears (a model that loads).
    server = """
import http.server, os, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/ready" or os.path.exists("/scratch/loaded")
        self.send_response(200 if ok else 503); self.end_headers(); self.wfile.write(socket.gethostname().encode())
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""
    for name in ("web-a", "web-b"):
        probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
        web = container(
            "web", server, ports=[{"name": "http", "containerPort": 8080}], readinessProbe=probe,
            livenessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
        )  # fmt: skip
        core.create_namespaced_pod(
            namespace, pod(name, [web], restartPolicy="Always", volumes=[{"name": "scratch", "emptyDir": {}}])
        )
    running = {
        name: wait_for(
            lambda name=name: read(kube, namespace, name), until=lambda p: state(p)["state"].get("running"), timeout=60
        )
        for name in ("web-a", "web-b")
    }
    addresses = {name: p["status"]["podIP"] for name, p in running.items()}
    assert len(set(addresses.values())) == 2
    for name, address in addresses.items():
        reply = wait_for(
            lambda address=address: urllib.request.urlopen(f"http://{address}:8080/", timeout=2).read(),
            ignore=(OSError,),
        )
        assert reply.decode() == name
    assert all(not state(read(kube, namespace, n))["ready"] for n in addresses)
    uid = running["web-a"]["metadata"]["uid"]
    (local_node.pod_dir(namespace, "web-a", uid).volume("scratch") / "loaded").touch()
    wait_for(
        lambda: read(kube, namespace, "web-a"), until=lambda p: state(p)["ready"], timeout=30, message="web-a Ready"
    )
    assert not state(read(kube, namespace, "web-b"))["ready"]

    # an exec liveness probe that fails: the container is killed and restarted (restartPolicy Always)
    liveness = {"exec": {"command": ["sh", "-c", "test -f /nonexistent"]}, "periodSeconds": 1, "failureThreshold": 2}
    doomed = container("main", "import time; time.sleep(600)", livenessProbe=liveness)
    core.create_namespaced_pod(
        namespace, pod("doomed", [doomed], restartPolicy="Always", terminationGracePeriodSeconds=1)
    )
    restarted = wait_for(
        lambda: read(kube, namespace, "doomed"), until=lambda p: state(p)["restartCount"] >= 1, timeout=60
    )
    assert state(restarted)["lastState"]["terminated"]["exitCode"] == 143
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=doomed").items
    assert any(e.reason == "Unhealthy" and "Liveness" in e.message for e in events)


def test_deletion_sends_sigterm_waits_the_grace_period_then_kills(
    kube: client.ApiClient, namespace: str, local_node: LocalNode, wait_for: Callable[..., Any], pod_history: PodHistory
) -> None:
    core = client.CoreV1Api(kube)
    up = "print('up', flush=True); time.sleep(600)"
    polite = f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); {up}"
    stubborn = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); {up}"
    core.create_namespaced_pod(namespace, pod("polite", [container("main", polite)]))
    core.create_namespaced_pod(
        namespace, pod("stubborn", [container("main", stubborn)], terminationGracePeriodSeconds=3)
    )
    for name in ("polite", "stubborn"):
        wait_for(
            lambda name=name: core.read_namespaced_pod_log(name, namespace),
            until=lambda log: "up" in log,
            timeout=60,
            ignore=(ApiException,),
        )
    started = time.monotonic()
    for name in ("polite", "stubborn"):
        core.delete_namespaced_pod(name, namespace)
    gone = {}
    for name in ("polite", "stubborn"):
        wait_for(
            lambda name=name: [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
            until=lambda names, name=name: name not in names,
            timeout=30,
        )
        gone[name] = time.monotonic() - started
    assert gone["polite"] < 3 <= gone["stubborn"] < 15
    for name, code in (("polite", 0), ("stubborn", 137)):
        last = pod_history.of(name)[0][-1]
        ended = [
            s
            for s in pod_history.of(name)[0]
            if s["status"].get("containerStatuses", [{}])[0].get("state", {}).get("terminated")
        ]
        assert ended, f"no terminated state seen for {name}: {last['status']}"
        assert ended[-1]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == code
    for name in ("polite", "stubborn"):  # nothing of theirs runs any more
        pid = local_node.container_pid(namespace, name, pod_history.of(name)[0][0]["metadata"]["uid"], "main")
        assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_a_restarted_agent_adopts_running_pods_and_finishes_deletions(
    kube: client.ApiClient, namespace: str, local_node: LocalNode, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    gate = tmp_path / "gate"
    gate.mkdir()
    waiter = "import os, time\nwhile not os.path.exists('/gate/go'): time.sleep(0.1)\nprint('released', flush=True)"
    core.create_namespaced_pod(
        namespace,
        pod("waiter", [container("main", waiter, volumeMounts=[{"name": "gate", "mountPath": "/gate"}])],
            volumes=[{"name": "gate", "hostPath": {"path": str(gate)}}]),
    )  # fmt: skip
    core.create_namespaced_pod(
        namespace, pod("sleeper", [container("main", "import time; time.sleep(600)")], terminationGracePeriodSeconds=1)
    )
    before = {
        name: wait_for(
            lambda name=name: read(kube, namespace, name),
            until=lambda p: state(p)["state"].get("running"),
            timeout=60,
        )
        for name in ("waiter", "sleeper")
    }
    local_node.kill_agent()  # the pods' processes keep running, as a stopped kubelet's containers do
    core.delete_namespaced_pod("sleeper", namespace)  # nobody finalises this one until the agent is back
    assert core.read_namespaced_pod("sleeper", namespace).metadata.deletion_timestamp is not None
    local_node.start()
    wait_for(
        lambda: [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
        until=lambda n: "sleeper" not in n,
        timeout=30,
    )
    adopted = read(kube, namespace, "waiter")
    assert (
        state(adopted)["state"]["running"] and state(adopted)["containerID"] == state(before["waiter"])["containerID"]
    )
    assert state(adopted)["restartCount"] == 0 and adopted["status"]["podIP"] == before["waiter"]["status"]["podIP"]
    (gate / "go").touch()
    done = wait_for(lambda: read(kube, namespace, "waiter"), until=phase_is("Succeeded", "Failed"), timeout=30)
    assert done["status"]["phase"] == "Succeeded"  # the new agent read the exit of a process it did not start
    assert core.read_namespaced_pod_log("waiter", namespace).strip() == "released"


def test_the_agent_rides_out_an_api_server_restart(
    kube: client.ApiClient,
    namespace: str,
    local_node: LocalNode,
    testbed: Any,
    wait_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    if testbed.state is None:
        pytest.skip("the test bed was not started here (AIDC_KUBECONFIG): it cannot be restarted")
    core = client.CoreV1Api(kube)
    gate = tmp_path / "gate"
    gate.mkdir()
    waiter = "import os, time\nwhile not os.path.exists('/gate/go'): time.sleep(0.1)"
    core.create_namespaced_pod(
        namespace,
        pod("waiter", [container("main", waiter, volumeMounts=[{"name": "gate", "mountPath": "/gate"}])],
            volumes=[{"name": "gate", "hostPath": {"path": str(gate)}}]),
    )  # fmt: skip
    wait_for(lambda: read(kube, namespace, "waiter"), until=lambda p: state(p)["state"].get("running"), timeout=60)
    (gate / "go").touch()  # it ends while the API server goes away: the agent writes that when it is back
    testbed.restart("kube-apiserver")
    done = wait_for(
        lambda: read(kube, namespace, "waiter"),
        until=phase_is("Succeeded", "Failed"),
        timeout=60,
        ignore=(ApiException,),
    )
    assert done["status"]["phase"] == "Succeeded"
    # the watch is back: a pod created after the restart runs
    core.create_namespaced_pod(namespace, pod("after", [container("main", "print('after')")]))
    after = wait_for(lambda: read(kube, namespace, "after"), until=phase_is("Succeeded", "Failed"), timeout=60)
    assert after["status"]["phase"] == "Succeeded"
    node = core.read_node(local_node.node_name)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
