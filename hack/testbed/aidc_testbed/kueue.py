"""Kueue's controller manager beside a running test bed, for the gang-scheduling tests.

Kueue (``hack/build-tools.sh`` builds ``sigs.k8s.io/kueue/cmd/kueue`` and copies its CRDs and
webhook manifests from the same pinned module) runs as a process on loopback, as the control
plane does:

- its webhooks are served on 127.0.0.1 with a certificate from the bed's CA, and the webhook
  configurations of its manifests are installed with ``url`` client configs and that CA as
  ``caBundle`` (Kueue's own certificate management, which wants a Service and a Secret, is off);
  the CRDs Kueue's kustomization gives a conversion webhook get one the same way;
- only the webhooks of what it runs are installed: its own API and pods (plain pod groups, the
  one integration enabled); the pod webhooks, like Kueue's ``managedJobsNamespaceSelector``,
  only see namespaces labelled ``aidc.io/kueue-test=true``, so other tests sharing the bed never
  meet Kueue;
- leader election, the visibility API server and the metrics server are off.

``stop`` removes the webhook configurations and the conversion webhooks before the process ends,
so the bed behaves afterwards as if Kueue had never run (the CRDs and their objects stay, inert).
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc_testbed import health, process
from aidc_testbed.crds import apply_crds
from aidc_testbed.pki import Pki, issue_serving_credentials
from aidc_testbed.ports import free_ports

NAMESPACE_LABEL = "aidc.io/kueue-test"
"""The label (value ``"true"``) of the namespaces whose pods Kueue manages."""
KUEUE_NAMESPACE = "kueue-system"
FIELD_MANAGER = "aidc-testbed-kueue"
WEBHOOK_PREFIX = "kueue-"
ADDRESS = "127.0.0.1"
# Kueue reads its metrics certificate from this fixed folder whenever its own certificate
# management is off (cmd/kueue/main.go), even with the metrics server disabled.
METRICS_CERT_DIR = "kueue/metrics/certs"  # under /etc
_OWN_GROUP = "kueue.x-k8s.io"
# libyaml when PyYAML has it: the Workload CRD alone is 1.4 MB of YAML, seconds in pure Python
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def configuration(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for the bed."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"{ADDRESS}:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": ADDRESS, "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "true"}},
        "integrations": {"frameworks": ["pod"]},
        # the visibility API is an aggregated API server of its own: not needed to admit gangs
        "featureGates": {"VisibilityOnDemand": False},
    }


def _client_config(port: int, path: str, ca_bundle: str) -> dict[str, Any]:
    return {"url": f"https://{ADDRESS}:{port}{path}", "caBundle": ca_bundle}


def _serves(webhook: dict[str, Any]) -> str | None:
    """What a webhook of Kueue's manifests is for: ``"own"`` (Kueue's API), ``"pods"``, else None."""
    rules = webhook.get("rules") or []
    if all(_OWN_GROUP in (r.get("apiGroups") or []) for r in rules):
        return "own"
    if all(r.get("apiGroups") == [""] and r.get("resources") == ["pods"] for r in rules):
        return "pods"
    return None


def webhook_configurations(manifests: list[dict[str, Any]], port: int, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, pointed at ``port`` on loopback and trimmed to the bed.

    Webhooks of the integrations left disabled (Jobs, Deployments, StatefulSets, Kubeflow, Ray,
    ...) are dropped: Kueue answers them with a no-op, and a Deployment webhook would put Kueue in
    the path of every InferenceService of the other tests.
    """
    rendered = []
    for manifest in manifests:
        webhooks = []
        for webhook in manifest.get("webhooks") or []:
            kind = _serves(webhook)
            if kind is None:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            pointed = {**webhook, "clientConfig": _client_config(port, path, ca_bundle), "timeoutSeconds": 5}
            if kind == "pods":
                pointed["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: "true"}}
            webhooks.append(pointed)
        name = WEBHOOK_PREFIX + manifest["metadata"]["name"]
        rendered.append({**manifest, "metadata": {"name": name}, "webhooks": webhooks})
    return rendered


def converted_crds(crd_dir: Path) -> set[str]:
    """The CRDs Kueue's kustomization (``config/components/crd``) gives a conversion webhook."""
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    names = set()
    for patch in kustomization.get("patches") or []:
        doc = yaml.safe_load((crd_dir / Path(patch["path"]).name).read_text())
        if ((doc.get("spec") or {}).get("conversion") or {}).get("strategy") == "Webhook":
            names.add(doc["metadata"]["name"])
    return names


def crds(crd_dir: Path, port: int, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's CRDs; those its kustomization converts by webhook, converting through ``port``."""
    converted = converted_crds(crd_dir)
    documents = [yaml.load(p.read_text(), Loader=_LOADER) for p in sorted(crd_dir.glob("kueue.x-k8s.io_*.yaml"))]
    for doc in documents:
        if doc["metadata"]["name"] in converted:
            doc["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": _client_config(port, "/convert", ca_bundle),
                    "conversionReviewVersions": ["v1"],
                },
            }
    return documents


def command_line(binary: Path, config_file: Path, etc_upper: Path, etc_work: Path) -> list[str]:
    """Kueue in a mount namespace of its own, where /etc is an overlay holding its metrics certificate.

    Kueue insists on /etc/kueue/metrics/certs (see METRICS_CERT_DIR) and the machine must be left
    as it was found (tests/host): the overlay's upper layer lives in the bed's folder, the mount is
    private to Kueue's namespace, and both vanish with the process. Without root, a user namespace
    maps the caller to root so the mount is still allowed.
    """
    mount = (
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={shlex.quote(str(etc_upper))},"
        f"workdir={shlex.quote(str(etc_work))} /etc"
    )
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [
        "unshare", *user, "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", f'{mount} && exec "$0" "$@"',
        str(binary), f"--config={config_file}", "--zap-log-level=2",
    ]  # fmt: skip


@dataclass(frozen=True)
class KueueFiles:
    """What a Kueue run writes under ``root`` (a folder of the bed's)."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def cert_dir(self) -> Path:
        """The webhook server's tls.crt and tls.key."""
        return self.root / "certs"

    @property
    def etc_upper(self) -> Path:
        return self.root / "etc" / "upper"

    @property
    def etc_work(self) -> Path:
        return self.root / "etc" / "work"

    @property
    def log(self) -> Path:
        return self.root / "kueue.log"


class Kueue:
    """One Kueue controller manager for a running bed; a context manager that undoes what it did."""

    def __init__(
        self,
        api: client.ApiClient,
        kubeconfig: Path,
        pki: Pki,
        tools_dir: Path,
        crd_dir: Path,
        root: Path,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.api = api
        self.kubeconfig = kubeconfig  # the bed's administrator: Kueue manages quota cluster-wide
        self.pki = pki
        self.binary = tools_dir / "kueue"
        self.crd_dir = crd_dir
        self.files = KueueFiles(root)
        self.timeout = timeout
        self.webhook_port = 0
        self._process: process.RunningProcess | None = None
        self._webhooks: list[tuple[str, str]] = []  # (kind, name) installed

    def start(self) -> Kueue:
        missing = [str(p) for p in (self.binary, self.crd_dir / "manifests.yaml") if not p.exists()]
        if missing:
            raise FileNotFoundError(f"missing {', '.join(missing)}: build them with `make tools` (hack/build-tools.sh)")
        self.webhook_port, health_port = free_ports(2)
        ca_bundle = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        self._write_files(health_port)
        try:
            self._install_crds(ca_bundle)
            self._spawn()
            health.poll(
                lambda: health.ok_or_none(health.http_get(ADDRESS, health_port, "/readyz")),
                timeout=self.timeout,
                what="kueue",
                abort=self._died,
            )
            self._install_webhooks(ca_bundle)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the webhooks (so no request waits on a dead server), then end the process."""
        admission = client.AdmissionregistrationV1Api(self.api)
        for kind, name in self._webhooks:
            delete = (
                admission.delete_mutating_webhook_configuration
                if kind == "MutatingWebhookConfiguration"
                else admission.delete_validating_webhook_configuration
            )
            try:
                delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise
        self._webhooks.clear()
        self._drop_conversion()
        if self._process is not None:
            process.stop([self._process])
            self._process = None

    def wait_until_gating(self, namespace: str) -> None:
        """Return once the API server calls Kueue's pod webhook for ``namespace`` (labelled
        NAMESPACE_LABEL): a dry-run pod with a queue comes back gated. A webhook configuration takes
        effect a moment after it is created; a gang created before would run without admission."""
        core = client.CoreV1Api(self.api)
        probe = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kueue-probe", "labels": {"kueue.x-k8s.io/queue-name": "probe"}},
            "spec": {"containers": [{"name": "probe", "image": "probe"}]},
        }

        def gated() -> bool | None:
            pod = core.create_namespaced_pod(namespace, probe, dry_run="All")
            return bool(pod.spec.scheduling_gates) or None

        health.poll(gated, timeout=self.timeout, what=f"Kueue's pod webhook in {namespace}", abort=self._died)

    def __enter__(self) -> Kueue:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _write_files(self, health_port: int) -> None:
        files = self.files
        shutil.rmtree(files.root, ignore_errors=True)
        for folder in (files.cert_dir, files.etc_upper / METRICS_CERT_DIR, files.etc_work):
            folder.mkdir(parents=True)
        cert, key = issue_serving_credentials(self.pki, "kueue", (ADDRESS,))
        for folder in (files.cert_dir, files.etc_upper / METRICS_CERT_DIR):
            shutil.copyfile(cert, folder / "tls.crt")
            shutil.copyfile(key, folder / "tls.key")
        config = configuration(self.webhook_port, health_port, files.cert_dir)
        files.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def _install_crds(self, ca_bundle: str) -> None:
        apply_crds(self.api, crds(self.crd_dir, self.webhook_port, ca_bundle), FIELD_MANAGER, self.timeout)

    def _drop_conversion(self) -> None:
        """Back to no conversion: only v1beta2 (the storage version) is used once Kueue is gone."""
        if not (self.crd_dir / "kustomization.yaml").exists():
            return
        extensions = client.ApiextensionsV1Api(self.api)
        body = {"spec": {"conversion": {"strategy": "None", "webhook": None}}}
        for name in converted_crds(self.crd_dir):
            try:
                extensions.patch_custom_resource_definition(name, body, _content_type="application/merge-patch+json")
            except ApiException as error:
                if error.status != 404:
                    raise

    def _spawn(self) -> None:
        files = self.files
        argv = command_line(self.binary, files.config_file, files.etc_upper, files.etc_work)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        running = process.spawn("kueue", argv, files.log, die_with_parent=True, env=env)
        # sh execs Kueue in the same process, so that is the binary /proc shows once it runs
        self._process = replace(running, binary=str(self.binary))

    def _died(self) -> str | None:
        running = self._process
        if running is None or process.is_running(running):
            return None
        tail = health.log_tail(Path(running.log))
        return f"exited ({process.exit_code(running)}); last lines of {running.log}:\n{tail}"

    def _install_webhooks(self, ca_bundle: str) -> None:
        admission = client.AdmissionregistrationV1Api(self.api)
        manifests = [d for d in yaml.safe_load_all((self.crd_dir / "manifests.yaml").read_text()) if d]
        for doc in webhook_configurations(manifests, self.webhook_port, ca_bundle):
            create = (
                admission.create_mutating_webhook_configuration
                if doc["kind"] == "MutatingWebhookConfiguration"
                else admission.create_validating_webhook_configuration
            )
            self._webhooks.append((doc["kind"], doc["metadata"]["name"]))
            create(doc)
