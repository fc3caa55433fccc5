"""aidc's test bed: a real Kubernetes control plane on loopback with fake GPU nodes.

Used by the cluster tests (``tests/conftest.py``), by the demo, and by hand through
``python -m aidc_testbed up|down|status``. See ``hack/README.md``.
"""

from __future__ import annotations

from aidc_testbed.config import TestbedConfig, default_tool_crds_dir
from aidc_testbed.health import StartError
from aidc_testbed.kwok import (
    ANNOTATION_EXIT_AFTER,
    ANNOTATION_EXIT_CODE,
    KUBELET_DOWN,
    KUBELET_UP,
    LABEL_KUBELET,
    exit_annotations,
)
from aidc_testbed.nodes import GPU_RESOURCE
from aidc_testbed.storage import STORAGE_CLASS
from aidc_testbed.testbed import Testbed, TestbedError
from aidc_testbed.waiting import WaitTimeoutError, wait_for

__all__ = [
    "ANNOTATION_EXIT_AFTER",
    "ANNOTATION_EXIT_CODE",
    "GPU_RESOURCE",
    "KUBELET_DOWN",
    "KUBELET_UP",
    "LABEL_KUBELET",
    "STORAGE_CLASS",
    "StartError",
    "Testbed",
    "TestbedConfig",
    "TestbedError",
    "WaitTimeoutError",
    "default_tool_crds_dir",
    "exit_annotations",
    "wait_for",
]
