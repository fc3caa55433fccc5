"""How the test bed runs Kueue, checked without starting it: its configuration, the webhooks and
conversion webhooks it installs (rendered from the manifests build-tools.sh copied), its command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aidc_testbed import default_tool_crds_dir
from aidc_testbed.kueue import (
    NAMESPACE_LABEL,
    command_line,
    configuration,
    converted_crds,
    crds,
    webhook_configurations,
)


@pytest.fixture
def copied() -> Path:
    folder = default_tool_crds_dir() / "kueue"
    if not (folder / "manifests.yaml").exists():
        pytest.skip(f"Kueue's manifests are not copied to {folder}: run `make tools` (hack/build-tools.sh)")
    return folder


def test_kueue_manages_only_labelled_namespaces_with_its_own_certificates_and_no_leader_election() -> None:
    config = configuration(9443, 8081, Path("/bed/kueue/certs"))
    assert config["managedJobsNamespaceSelector"] == {"matchLabels": {NAMESPACE_LABEL: "true"}}
    assert config["internalCertManagement"] == {"enable": False}
    assert config["leaderElection"] == {"leaderElect": False}
    assert config["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": "/bed/kueue/certs"}
    assert config["integrations"] == {"frameworks": ["pod"]}
    assert config["featureGates"] == {"VisibilityOnDemand": False}


def test_only_kueue_s_own_and_the_pod_webhooks_are_installed_pointing_at_loopback(copied: Path) -> None:
    manifests = [d for d in yaml.safe_load_all((copied / "manifests.yaml").read_text()) if d]
    rendered = webhook_configurations(manifests, 9443, "Q0E=")
    webhooks = {w["name"]: w for doc in rendered for w in doc["webhooks"]}
    assert {"mpod.kb.io", "vpod.kb.io", "mworkload.kb.io", "vclusterqueue.kb.io"} <= set(webhooks)
    assert not {"mdeployment.kb.io", "vjob.kb.io", "mstatefulset.kb.io"} & set(webhooks)  # disabled integrations
    for webhook in webhooks.values():
        assert webhook["clientConfig"]["url"].startswith("https://127.0.0.1:9443/")
        assert webhook["clientConfig"]["caBundle"] == "Q0E="
    assert webhooks["mpod.kb.io"]["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate--v1-pod"
    for name in ("mpod.kb.io", "vpod.kb.io"):
        assert webhooks[name]["namespaceSelector"] == {"matchLabels": {NAMESPACE_LABEL: "true"}}
    assert all(doc["metadata"]["name"].startswith("kueue-") for doc in rendered)


def test_the_crds_kueue_converts_by_webhook_convert_through_loopback(copied: Path) -> None:
    converted = converted_crds(copied)
    assert "workloads.kueue.x-k8s.io" in converted and "resourceflavors.kueue.x-k8s.io" not in converted
    documents = {d["metadata"]["name"]: d for d in crds(copied, 9443, "Q0E=")}
    workloads = documents["workloads.kueue.x-k8s.io"]["spec"]["conversion"]
    assert workloads["webhook"]["clientConfig"] == {"url": "https://127.0.0.1:9443/convert", "caBundle": "Q0E="}
    assert "conversion" not in documents["resourceflavors.kueue.x-k8s.io"]["spec"]


def test_kueue_runs_in_a_mount_namespace_of_its_own_with_etc_overlaid() -> None:
    argv = command_line(Path("/t/kueue"), Path("/b/config.yaml"), Path("/b/etc/upper"), Path("/b/etc/work"))
    assert argv[:1] == ["unshare"] and "--mount" in argv and argv[argv.index("--propagation") + 1] == "private"
    script = argv[argv.index("-c") + 1]
    assert "lowerdir=/etc,upperdir=/b/etc/upper,workdir=/b/etc/work /etc" in script and 'exec "$0" "$@"' in script
    assert argv[argv.index("-c") + 2 :][:2] == ["/t/kueue", "--config=/b/config.yaml"]
