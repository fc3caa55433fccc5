"""A second scheduler for gang scheduling: kube-scheduler with scheduler-plugins' Coscheduling plugin.

A TrainingJob with ``schedulingPolicy.gangScheduler: Coscheduling`` gets a PodGroup
(``scheduling.x-k8s.io/v1alpha1``) and pods labelled ``scheduling.x-k8s.io/pod-group`` whose
``schedulerName`` is ``scheduler-plugins-scheduler``. This is that scheduler: the binary
``scheduler-plugins`` of ``hack/build-tools.sh`` (sigs.k8s.io/scheduler-plugins built as published,
against the Kubernetes release it pins), with one profile of that name enabling Coscheduling as
the module's ``manifests/coscheduling/scheduler-config.yaml`` does: at every point the plugin
implements (queue sort, pre-filter, post-filter, reserve, permit), the default queue sort off. It
runs beside the bed's default scheduler, which leaves pods of another scheduler name alone.

It is not part of every bed: only the gang tests use it, so :func:`running` starts it for them
(one process for a test module, ready in about a second) and stops it after; the bed's start, the
demo and the benchmark stay as they were. It installs what it needs first: the PodGroup CRD of the
same release (copied by ``build-tools.sh`` into ``$AIDC_TOOL_CRDS/scheduler-plugins``), and a user
of its own, bound to the rights the bootstrap policy gives kube-scheduler plus reading PodGroups.
This version's scheduler only reads them; their status is written by scheduler-plugins' separate
controller, which aidc does not need and the bed does not run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from aidc_testbed import health, process
from aidc_testbed.config import default_tool_crds_dir
from aidc_testbed.crds import apply_crds
from aidc_testbed.kubeconfig import write_kubeconfig
from aidc_testbed.pki import ClientIdentity, Pki, issue_client_credentials
from aidc_testbed.ports import free_ports
from aidc_testbed.testbed import Testbed, TestbedError

SCHEDULER_NAME = "scheduler-plugins-scheduler"
BINARY = "scheduler-plugins"
PLUGIN = "Coscheduling"
CRD_FILE = Path("scheduler-plugins") / "scheduling.x-k8s.io_podgroups.yaml"
IDENTITY = ClientIdentity("scheduler-plugins", SCHEDULER_NAME)
PODGROUP_READER = "aidc-testbed:scheduler-plugins:podgroups"
# the bootstrap roles of kube-scheduler (pods, nodes, bindings, events, volumes, DRA) and our own
ROLES = ("system:kube-scheduler", "system:volume-scheduler", PODGROUP_READER)
FIELD_MANAGER = "aidc-testbed"
# how long a pod of a PodGroup without scheduleTimeoutSeconds waits at Permit for its gang (the
# manifest's value; the operator always sets the PodGroup's own)
PERMIT_WAITING_SECONDS = 10
# a pod the gang turned away is tried again within a second or two once something changed
# (defaults 1 and 10 s): a test sees a freed gang bind in about a second
POD_INITIAL_BACKOFF_SECONDS = 1
POD_MAX_BACKOFF_SECONDS = 2


@dataclass(frozen=True)
class SecondScheduler:
    """The running scheduler: its process, its log, and when it became ready."""

    process: process.RunningProcess
    log: Path
    ready_at: float  # time.time()

    def said(self, text: str) -> list[str]:
        """The lines of its log that contain ``text`` (what it says about a pod or a gang)."""
        return [line for line in self.log.read_text(errors="replace").splitlines() if text in line]


def configuration(kubeconfig: Path) -> dict[str, Any]:
    """The KubeSchedulerConfiguration: one profile, ``scheduler-plugins-scheduler``, with Coscheduling."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "leaderElection": {"leaderElect": False},
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "podInitialBackoffSeconds": POD_INITIAL_BACKOFF_SECONDS,
        "podMaxBackoffSeconds": POD_MAX_BACKOFF_SECONDS,
        "profiles": [
            {
                "schedulerName": SCHEDULER_NAME,
                "plugins": {
                    "multiPoint": {"enabled": [{"name": PLUGIN}]},
                    "queueSort": {"enabled": [{"name": PLUGIN}], "disabled": [{"name": "*"}]},
                },
                "pluginConfig": [{"name": PLUGIN, "args": {"permitWaitingTimeSeconds": PERMIT_WAITING_SECONDS}}],
            }
        ],
    }


def rbac() -> list[dict[str, Any]]:
    """The PodGroup reader role, and a binding of each role in ``ROLES`` to the scheduler's user."""
    reader = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": PODGROUP_READER},
        "rules": [
            {"apiGroups": ["scheduling.x-k8s.io"], "resources": ["podgroups"], "verbs": ["get", "list", "watch"]}
        ],
    }
    bindings = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"aidc-testbed:scheduler-plugins:{role.rsplit(':', 1)[-1]}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": IDENTITY.name}],
        }
        for role in ROLES
    ]
    return [reader, *bindings]


def command_line(binary: Path, config_file: Path, port: int, pki: Pki) -> list[str]:
    """Serving /readyz on loopback with the bed's serving certificate; no delegated authentication:
    the health paths are always allowed, and nothing else is asked of it."""
    return [
        str(binary),
        f"--config={config_file}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
    ]


def podgroup_crd(crds_dir: Path | None = None) -> dict[str, Any]:
    """scheduler-plugins' PodGroup CRD, as build-tools.sh copied it from the pinned module."""
    path = (crds_dir or default_tool_crds_dir()) / CRD_FILE
    if not path.is_file():
        raise TestbedError(f"missing {path}; copy it with `make tools` (hack/build-tools.sh)")
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def install(api: client.ApiClient, crd: dict[str, Any]) -> None:
    """Apply the CRD and the RBAC objects (server-side), and wait until PodGroups are served."""
    apply = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    rbac_api = client.RbacAuthorizationV1Api(api)
    for obj in rbac():
        name = obj["metadata"]["name"]
        if obj["kind"] == "ClusterRole":
            rbac_api.patch_cluster_role(name, obj, **apply)
        else:
            rbac_api.patch_cluster_role_binding(name, obj, **apply)
    apply_crds(api, [crd], FIELD_MANAGER, timeout=30)


@contextlib.contextmanager
def running(bed: Testbed, *, timeout: float = 60.0) -> Iterator[SecondScheduler]:
    """The second scheduler against ``bed``, from the CRD's install until the block ends."""
    binary = bed.config.tools_dir / BINARY
    if not binary.is_file():
        raise TestbedError(f"missing {binary}; build it with `make tools` (hack/build-tools.sh)")
    install(bed.api_client(), podgroup_crd())
    pki = Pki(bed.layout.pki)
    folder = bed.layout.root / BINARY
    server = bed.api_client().configuration.host  # also when the bed was attached by its kubeconfig
    kubeconfig = write_kubeconfig(folder / "kubeconfig", server, pki, issue_client_credentials(pki, IDENTITY))
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(configuration(kubeconfig), sort_keys=False))
    port = free_ports(1)[0]
    log = bed.layout.log(BINARY)
    started = process.spawn(BINARY, command_line(binary, config_file, port, pki), log, die_with_parent=True)
    try:
        tls = health.client_tls(pki.ca_cert)
        health.poll(
            lambda: health.ok_or_none(health.http_get("127.0.0.1", port, "/readyz", tls=tls)),
            timeout=timeout,
            what=BINARY,
            abort=lambda: None if process.is_running(started) else f"exited; log:\n{health.log_tail(log)}",
        )
        yield SecondScheduler(started, log, time.time())
    finally:
        process.stop([started])
