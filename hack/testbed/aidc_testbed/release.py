"""The operator installed by its own Helm chart onto a bed's real nodes, with the images of ``make images``.

What a kind user does with ``helm install --set image.repository=...`` after ``kind load``: the
demo and the e2e tests install the chart this way, so the operator runs as a pod of its own image
under the restricted Pod Security level and reaches the API server through the ``kubernetes``
Service, as on any cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from aidc_testbed.config import REPO_ROOT, TestbedConfig
from aidc_testbed.diagnose import node_errors
from aidc_testbed.layout import Layout
from aidc_testbed.realnodes import placement

CHART = REPO_ROOT / "charts" / "aidc-operator"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def image_archives(config: TestbedConfig) -> list[dict[str, str]]:
    """``make images``'s listing: ``ref`` and ``archive`` of every image it built."""
    listing = config.images_dir / "images.json"
    if not listing.is_file():
        raise FileNotFoundError(f"no images in {config.images_dir}: build them with `make images`")
    images: list[dict[str, str]] = json.loads(listing.read_text())
    return images


def image_refs(config: TestbedConfig) -> dict[str, str]:
    """The refs of ``make images`` by short name: ``aidc-operator``, ``aidc-trainer``, ``coredns``..."""
    return {entry["ref"].rsplit("/", 1)[-1].split(":", 1)[0]: entry["ref"] for entry in image_archives(config)}


def chart_values(config: TestbedConfig, *, tainted: bool, **overrides: Any) -> dict[str, Any]:
    """Values that run the chart's operator from the local images (never pulled), on a real node."""
    refs = image_refs(config)
    repository, tag = refs["aidc-operator"].rsplit(":", 1)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "trainerImage": refs["aidc-trainer"],
        "operator": {"podImagePullPolicy": "Never"},
    }
    if tainted:  # kwok nodes share the bed: the operator goes where real pods run
        values |= {"nodeSelector": placement()["nodeSelector"], "tolerations": placement()["tolerations"]}
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return values


def helm(config: TestbedConfig, kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The bed's helm (``make tools``), with its cache and config under the bed's folder."""
    home = config.state_dir / "helm"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}  # fmt: skip
    done = subprocess.run([str(config.tools_dir / "helm"), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    if check and done.returncode:
        raise RuntimeError(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def install(
    config: TestbedConfig, kubeconfig: Path, release: str, namespace: str, values: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """``helm install --wait`` of the chart; the values go through a file, as a user's would."""
    values_file = config.state_dir / f"values-{release}.yaml"
    values_file.write_text(json.dumps(values, indent=2))
    done = helm(
        config, kubeconfig, "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
        "-f", str(values_file), "--wait", "--timeout", "180s", check=False,
    )  # fmt: skip
    if done.returncode:
        failure = f"helm install {release} exited {done.returncode}: {done.stderr.strip()}"
        raise RuntimeError(f"{failure}\n{_report(kubeconfig, namespace)}\n{node_errors(Layout(config.state_dir).logs)}")
    return done


def _report(kubeconfig: Path, namespace: str) -> str:
    """What the release's pods are doing (:mod:`aidc_testbed.diagnose`), for a failed install's error."""
    from kubernetes import config as kube_config

    from aidc_testbed.diagnose import pods_report

    try:
        api = kube_config.new_client_from_config(str(kubeconfig))
    except Exception as error:  # the install's failure matters more than its report's
        return f"(no report: {error!r})"
    with api:
        return pods_report(api, namespace)
