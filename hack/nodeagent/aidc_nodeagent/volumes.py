"""A pod's volumes as host folders, and each container's mounts of them.

- ``persistentVolumeClaim``: claim -> bound PersistentVolume -> its ``hostPath`` (or ``local``)
  folder; the test bed's pool volumes are hostPath folders under its state directory.
- ``hostPath``: the folder itself (created for ``DirectoryOrCreate``).
- ``emptyDir``: a folder in the pod's directory (``medium: Memory`` too: it is still a folder).
- ``configMap``, ``secret``, ``downwardAPI`` and ``projected`` (the ServiceAccount token the API
  server's admission adds to every pod: a TokenRequest bound to the pod, renewed at 80 % of its
  lifetime, the cluster CA from ``kube-root-ca.crt`` and the namespace): files written once into
  a folder of the pod's directory, read-only to the container.

Mounts honour ``subPath``/``subPathExpr`` (a folder of the volume, made if missing, or a single
file) and ``readOnly``; the shim bind-mounts them at their mount paths.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidc_nodeagent.downward import FieldError, field_value, resource_value
from aidc_nodeagent.environment import expand
from aidc_nodeagent.kube import Kube, quote
from aidc_nodeagent.layout import PodDir

DEFAULT_TOKEN_SECONDS = 3600
_TOKEN_REFRESH_FRACTION = 0.8


class VolumeError(RuntimeError):
    """A volume cannot be set up yet (unbound claim, missing ConfigMap): retried, the pod waits."""


@dataclass(frozen=True)
class Volume:
    name: str
    path: Path
    read_only: bool = False  # the volume itself is read-only (a claim mounted readOnly, files the agent wrote)


@dataclass
class _Token:
    path: Path
    account: str
    audiences: list[str]
    seconds: int
    refresh_at: float = 0.0


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write one file atomically (a reader never sees a partial token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_bytes(data)
    os.chmod(scratch, mode)
    scratch.replace(path)


class PodVolumes:
    """Sets up the volumes of one pod and keeps its tokens fresh."""

    def __init__(
        self, kube: Kube, pod: dict[str, Any], pod_dir: PodDir, host_ip: str, allocatable: dict[str, str]
    ) -> None:
        self._kube = kube
        self._pod = pod
        self._dir = pod_dir
        self._host_ip = host_ip
        self._allocatable = allocatable
        self._tokens: list[_Token] = []
        self.volumes: dict[str, Volume] = {}

    @property
    def _namespace(self) -> str:
        return str(self._pod["metadata"]["namespace"])

    def prepare(self, pod_ip: str | None) -> dict[str, Volume]:
        """Resolve and write every volume; :class:`VolumeError` says what is still missing."""
        volumes = {}
        self._tokens = []
        for volume in self._pod["spec"].get("volumes") or []:
            volumes[volume["name"]] = self._volume(volume, pod_ip)
        self.volumes = volumes
        self.refresh_tokens(force=True)
        return volumes

    # -- kinds ---------------------------------------------------------------------------------------

    def _volume(self, volume: dict[str, Any], pod_ip: str | None) -> Volume:
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            source = volume["persistentVolumeClaim"]
            return Volume(name, self._claim_path(source["claimName"]), bool(source.get("readOnly")))
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            kind = volume["hostPath"].get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif kind and kind != "DirectoryOrCreate" and not path.exists():
                raise VolumeError(f"hostPath {path} does not exist")
            return Volume(name, path)
        target = self._dir.volume(name)
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return Volume(name, target)
        if "configMap" in volume:
            self._config_map(target, volume["configMap"], volume["configMap"].get("defaultMode", 0o644))
        elif "secret" in volume:
            self._secret(target, volume["secret"], volume["secret"].get("defaultMode", 0o644))
        elif "downwardAPI" in volume:
            self._downward(target, volume["downwardAPI"].get("items") or [], pod_ip, 0o644)
        elif "projected" in volume:
            self._projected(target, volume["projected"], pod_ip)
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(f"volume {name}: unsupported kind {', '.join(kinds)}")
        return Volume(name, target, read_only=True)

    def _claim_path(self, claim_name: str) -> Path:
        claim = self._kube.get(
            f"/api/v1/namespaces/{quote(self._namespace)}/persistentvolumeclaims/{quote(claim_name)}"
        )
        if claim is None:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = claim.get("spec", {}).get("volumeName")
        if not volume_name or claim.get("status", {}).get("phase") != "Bound":
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound')
        volume = self._kube.get(f"/api/v1/persistentvolumes/{quote(volume_name)}")
        spec = (volume or {}).get("spec", {})
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not path:
            raise VolumeError(f"persistentvolume {volume_name} is neither hostPath nor local: no folder to mount")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _object(self, kind: str, name: str, optional: bool) -> dict[str, Any] | None:
        found = self._kube.get(f"/api/v1/namespaces/{quote(self._namespace)}/{kind}/{quote(name)}")
        if found is None and not optional:
            raise VolumeError(f'{kind[:-1]} "{name}" not found')
        return found

    @staticmethod
    def _items(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> list[tuple[str, bytes, int | None]]:
        if not items:
            return [(key, value, None) for key, value in sorted(data.items())]
        return [(item["path"], data[item["key"]], item.get("mode")) for item in items if item["key"] in data]

    def _config_map(self, target: Path, source: dict[str, Any], mode: int) -> None:
        found = self._object("configmaps", source["name"], bool(source.get("optional")))
        if found is None:
            return
        data = {k: v.encode() for k, v in (found.get("data") or {}).items()}
        data |= {k: base64.b64decode(v) for k, v in (found.get("binaryData") or {}).items()}
        for path, value, item_mode in self._items(data, source.get("items")):
            _write(target / path, value, item_mode or mode)

    def _secret(self, target: Path, source: dict[str, Any], mode: int) -> None:
        name = source.get("secretName") or source.get("name")
        found = self._object("secrets", str(name), bool(source.get("optional")))
        if found is None:
            return
        data = {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}
        data |= {k: v.encode() for k, v in (found.get("stringData") or {}).items()}
        for path, value, item_mode in self._items(data, source.get("items")):
            _write(target / path, value, item_mode or mode)

    def _downward(self, target: Path, items: list[dict[str, Any]], pod_ip: str | None, mode: int) -> None:
        containers = {c["name"]: c for c in self._pod["spec"].get("containers") or []}
        for item in items:
            try:
                if "fieldRef" in item:
                    value = field_value(self._pod, item["fieldRef"]["fieldPath"], pod_ip, self._host_ip)
                else:
                    ref = item["resourceFieldRef"]
                    container = containers.get(ref.get("containerName", ""), {})
                    value = resource_value(container, ref, self._allocatable)
            except (FieldError, KeyError) as error:
                raise VolumeError(f"downwardAPI {item.get('path')}: {error}") from None
            _write(target / item["path"], value.encode(), item.get("mode") or mode)

    def _projected(self, target: Path, projected: dict[str, Any], pod_ip: str | None) -> None:
        mode = projected.get("defaultMode", 0o644)
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                audience = token.get("audience")
                self._tokens.append(
                    _Token(
                        path=target / token["path"],
                        account=self._pod["spec"].get("serviceAccountName") or "default",
                        audiences=[audience] if audience else [],
                        seconds=int(token.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS),
                    )
                )
            elif "configMap" in source:
                self._config_map(target, source["configMap"], mode)
            elif "secret" in source:
                self._secret(target, {"secretName": source["secret"].get("name"), **source["secret"]}, mode)
            elif "downwardAPI" in source:
                self._downward(target, source["downwardAPI"].get("items") or [], pod_ip, mode)

    # -- tokens --------------------------------------------------------------------------------------

    def refresh_tokens(self, *, force: bool = False) -> None:
        """Request a new bound token for each projected token older than 80 % of its lifetime."""
        now = time.monotonic()
        for token in self._tokens:
            if not force and now < token.refresh_at:
                continue
            try:
                answer = self._kube.service_account_token(
                    self._namespace, token.account, self._pod, token.audiences, token.seconds
                )
            except Exception as error:
                if force:
                    raise VolumeError(f"token for serviceaccount {token.account}: {error}") from None
                continue  # the old token is still valid for a while: try again next time
            _write(token.path, answer["status"]["token"].encode(), 0o644)
            token.refresh_at = now + token.seconds * _TOKEN_REFRESH_FRACTION

    # -- mounts --------------------------------------------------------------------------------------

    def mounts(self, container: dict[str, Any], env: dict[str, str]) -> list[dict[str, Any]]:
        """The shim's bind mounts for ``container``."""
        found = []
        for mount in container.get("volumeMounts") or []:
            volume = self.volumes.get(mount["name"])
            if volume is None:
                raise VolumeError(f"volumeMount {mount['name']} names no volume of the pod")
            source = volume.path
            sub_path = mount.get("subPath") or (expand(mount["subPathExpr"], env) if mount.get("subPathExpr") else "")
            if sub_path:
                if sub_path.startswith("/") or ".." in Path(sub_path).parts:
                    raise VolumeError(f"subPath {sub_path!r} must be a relative path inside the volume")
                source = source / sub_path
                if not source.exists():
                    source.mkdir(parents=True, exist_ok=True)
            found.append(
                {
                    "source": str(source),
                    "target": mount["mountPath"],
                    "readOnly": bool(mount.get("readOnly")) or volume.read_only,
                    "file": source.is_file(),
                }
            )
        return found
