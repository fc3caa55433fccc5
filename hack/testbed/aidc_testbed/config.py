"""What a test bed is made of: how many fake GPU nodes, how big, how many volumes, where it lives.

One frozen value carries every choice, so the CLI, the pytest fixtures and the demo build the
same cluster from the same defaults, and the state file can record what was asked for.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The aidc repository (this package lives at hack/testbed/aidc_testbed/)."""


def default_state_dir() -> Path:
    """``$AIDC_TESTBED_DIR``, else ``.cache/testbed`` of the repository."""
    return Path(os.environ.get("AIDC_TESTBED_DIR", REPO_ROOT / ".cache" / "testbed"))


def default_tools_dir() -> Path:
    """Where ``hack/build-tools.sh`` puts the binaries: ``$AIDC_TOOLS``, else ``.cache/tools/bin``."""
    return Path(os.environ.get("AIDC_TOOLS", REPO_ROOT / ".cache" / "tools" / "bin"))


def default_tool_crds_dir() -> Path:
    """Where ``hack/build-tools.sh`` copies the CRDs of other projects the tests install (the CSI
    snapshot API in ``snapshot/``): ``$AIDC_TOOL_CRDS``, else ``crds`` beside the tools' folder."""
    return Path(os.environ.get("AIDC_TOOL_CRDS", default_tools_dir().parent / "crds"))


def default_images_dir() -> Path:
    """Where ``make images`` puts the image archives: ``$AIDC_IMAGES``, else ``.cache/images``."""
    return Path(os.environ.get("AIDC_IMAGES", REPO_ROOT / ".cache" / "images"))


def default_image_store() -> Path:
    """Where real nodes keep their containerd roots between beds: ``$AIDC_IMAGE_STORE``, else
    ``.cache/image-store`` (one folder per node; images imported once)."""
    return Path(os.environ.get("AIDC_IMAGE_STORE", REPO_ROOT / ".cache" / "image-store"))


def default_kwok_stages() -> tuple[Path, ...]:
    """The kwok Stage files of ``hack/kwok/`` that give pods and nodes their lifecycle."""
    return (REPO_ROOT / "hack" / "kwok" / "node-stages.yaml", REPO_ROOT / "hack" / "kwok" / "pod-stages.yaml")


@dataclass(frozen=True)
class TestbedConfig:
    """Everything that shapes one loopback cluster; the defaults give four fake 8-GPU nodes."""

    __test__ = False  # a name starting with "Test" is not a pytest test class

    state_dir: Path = field(default_factory=default_state_dir)
    nodes: int = 4
    gpus_per_node: int = 8
    cpu_per_node: str = "64"
    memory_per_node: str = "512Gi"
    pods_per_node: int = 110
    volumes: int = 32
    tools_dir: Path = field(default_factory=default_tools_dir)
    # Real nodes (containerd, runc, a kubelet each; one kube-proxy; CoreDNS): they run the images of
    # `make images` and need root. None by default, so kwok-only users (the scale benchmark) need
    # neither; the CLI, the test session and the demo ask for one.
    real_nodes: int = 0
    images_dir: Path = field(default_factory=default_images_dir)
    image_store: Path = field(default_factory=default_image_store)
    kwok_stages: tuple[Path, ...] = field(default_factory=default_kwok_stages)
    # Seconds a pod stays bound to a NotReady/unreachable node before the taint eviction
    # controller deletes it (the API server's default toleration; 300 in a stock cluster, short
    # here so a node failure shows in a test within seconds).
    eviction_toleration_seconds: int = 5
    start_timeout_seconds: float = 180.0
    # Kill the control plane when the process that started it dies (tests, the demo); the CLI's
    # `up` leaves it running for a later `down`.
    die_with_parent: bool = False

    def __post_init__(self) -> None:
        if self.nodes < 0 or self.real_nodes < 0 or self.nodes + self.real_nodes < 1:
            raise ValueError("a test bed needs at least one node (kwok or real)")
        if self.real_nodes > 200:
            raise ValueError("real nodes take a /24 each of 10.245.0.0/16: at most 200")
        if self.gpus_per_node < 0 or self.volumes < 0 or self.pods_per_node < 1:
            raise ValueError("gpus_per_node and volumes must be >= 0, pods_per_node >= 1")
        # resolved: the paths the components are given (sockets) are compared with /proc later
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())
        object.__setattr__(self, "tools_dir", Path(self.tools_dir).absolute())
        object.__setattr__(self, "images_dir", Path(self.images_dir).absolute())
        object.__setattr__(self, "image_store", Path(self.image_store).absolute())
        object.__setattr__(self, "kwok_stages", tuple(Path(p).absolute() for p in self.kwok_stages))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TestbedConfig:
        """The config :meth:`to_json` recorded (``attach`` learns what a running bed was asked for)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["kwok_stages"] = tuple(Path(p) for p in values.get("kwok_stages", ()))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy, recorded in the state file so `status` can say what was asked for."""
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["tools_dir"] = str(self.tools_dir)
        data["images_dir"] = str(self.images_dir)
        data["image_store"] = str(self.image_store)
        data["kwok_stages"] = [str(p) for p in self.kwok_stages]
        return data
