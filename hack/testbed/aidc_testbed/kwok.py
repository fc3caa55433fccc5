"""The knobs the kwok stages of ``hack/kwok/`` offer to a test, written once for Python.

kwok plays each fake node's kubelet. A test decides how a pod's containers end with two pod
annotations, and whether a node's kubelet is alive with one node label; the stage files read
the same names (a test in tests/cluster/ proves both agree).
"""

from __future__ import annotations

from typing import Final

ANNOTATION_EXIT_CODE: Final = "aidc.io/kwok-exit-code"
"""Exit code (``"0"``..``"255"``) every container of the pod exits with once it has run."""

ANNOTATION_EXIT_AFTER: Final = "aidc.io/kwok-exit-after"
"""How long the pod runs before it exits: a Go duration (``"5s"``) or an RFC 3339 time."""

LABEL_KUBELET: Final = "aidc.io/kwok-kubelet"
"""Node label: kwok plays the kubelet of a node only while it is :data:`KUBELET_UP`."""

KUBELET_UP: Final = "up"
KUBELET_DOWN: Final = "down"

ANNOTATION_FAKE_NODE: Final = "kwok.x-k8s.io/node"
"""kwok's own marker of a fake node (value ``fake``), kept for tools that look for it."""


def exit_annotations(exit_code: int, after: str = "0s") -> dict[str, str]:
    """Pod annotations that make kwok end the pod's containers with ``exit_code`` after ``after``."""
    if not 0 <= exit_code <= 255:
        raise ValueError(f"exit code {exit_code} is outside 0..255")
    return {ANNOTATION_EXIT_CODE: str(exit_code), ANNOTATION_EXIT_AFTER: after}
