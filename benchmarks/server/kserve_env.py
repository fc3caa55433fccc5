"""The KServe environment of ``bench_server.py``: PyPI's kserve in a virtual environment of its own.

kserve pins FastAPI, uvicorn, pydantic and protobuf versions of its own, so it never goes into the
project's environment. torch is not installed a second time (PyPI's torch is a CUDA build of
several GB whose libraries ``import torch`` needs): a ``.pth`` line appends the project
environment's site-packages after the KServe environment's own, so kserve's packages win every
name they both have and torch, which kserve does not install, comes from the project.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

KSERVE_VERSION = "0.21.0"
PTH_NAME = "zz-aidc-project-packages.pth"  # zz: processed after the environment's own .pth files


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def kserve_python(venv: Path) -> Path:
    """The KServe environment's interpreter, created and installed when missing (needs PyPI once)."""
    python = venv / "bin" / "python"
    marker = venv / f".kserve-{KSERVE_VERSION}"
    if not marker.exists():
        print(f"installing kserve {KSERVE_VERSION} into {venv} (once)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        subprocess.run([str(python), "-m", "ensurepip", "--upgrade"], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", f"kserve=={KSERVE_VERSION}"],
            check=True,
        )
        marker.touch()
    project_packages = sysconfig.get_paths()["purelib"]
    (_site_packages(python) / PTH_NAME).write_text(project_packages + "\n")
    return python
