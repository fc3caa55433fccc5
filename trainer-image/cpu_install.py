"""Install Python requirements on a machine without a GPU, in a fraction of the disk pip takes.

PyPI's Linux torch is a CUDA build whose libraries link against the CUDA runtime wheels (nvidia-*),
so `import torch` needs those even on a CPU. Resolved by one `pip install`, they are 2.9 GB of wheels
that pip downloads in full before it unpacks the first, about 9 GB on disk at the peak. This script
resolves the requirements once (`pip install --dry-run --report`), then installs what pip chose with
`--no-deps`, each CUDA wheel (and torch) on its own, and deletes from it what a CPU never loads before
the next one comes:
- triton and cuda-bindings (the GPU compiler and bindings, imported lazily) are not installed;
- cuDNN's engines (libcudnn.so.9 itself is linked and stays), cuSOLVER (torch.linalg on CUDA),
  nvJitLink, NVSHMEM's device bitcode and CUPTI's profiling extras are only dlopen'ed on a GPU.
The disk then holds what stays (about 3 GB with torch) and one wheel. `make venv` and the trainer
image's CPU variant install with it; the GPU variant's torch comes with its base image.

usage: python cpu_install.py REQUIREMENT-OR-OPTION...  (what `pip install` takes: specifiers, -e PATH,
-r FILE; pip's own configuration, PIP_* variables and pip.conf, applies to every step)
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

NEVER_LOADED_ON_CPU = frozenset({"triton", "cuda-bindings"})

# relative to the folder of the nvidia package: libraries that only a GPU loads (dlopen'ed, never linked)
GPU_ONLY_LIBRARIES = (
    "cudnn/lib/libcudnn_*.so*",
    "cu*/lib/libcusolver*.so*",
    "cu*/lib/libnvJitLink.so*",
    "cu*/lib/libnvperf_*.so",
    "nvshmem/lib/*.bc",
)

PIP = (sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "--quiet")


@dataclass(frozen=True)
class Distribution:
    """One distribution pip's resolver chose: a release from the index or a project on this disk."""

    name: str
    version: str
    local_path: str | None = None
    editable: bool = False

    @property
    def install_args(self) -> list[str]:
        if self.local_path is None:
            return [f"{self.name}=={self.version}"]
        return ["-e", self.local_path] if self.editable else [self.local_path]

    @property
    def is_large(self) -> bool:
        """torch and the CUDA wheels: 8 to 514 MB each, installed one at a time."""
        return self.name == "torch" or self.name.startswith(("nvidia-", "cuda-"))


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def distributions_of(report: dict) -> list[Distribution]:
    """What a `pip install --report` would install, in its order."""
    chosen = []
    for item in report["install"]:
        info = item["download_info"]
        url = urlparse(info["url"])
        local_path = unquote(url.path) if url.scheme == "file" and "dir_info" in info else None
        chosen.append(
            Distribution(
                name=canonical(item["metadata"]["name"]),
                version=item["metadata"]["version"],
                local_path=local_path,
                editable=bool(info.get("dir_info", {}).get("editable")),
            )
        )
    return chosen


def install_steps(chosen: list[Distribution]) -> list[list[Distribution]]:
    """The small distributions in one step, then each large one alone; what a CPU never loads left out."""
    wanted = [d for d in chosen if d.name not in NEVER_LOADED_ON_CPU]
    small = [d for d in wanted if not d.is_large and d.local_path is None]
    large = [[d] for d in wanted if d.is_large]
    local = [d for d in wanted if d.local_path is not None]
    return [step for step in (small, *large, local) if step]


def resolve(requirements: list[str]) -> list[Distribution]:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run([*PIP, "--dry-run", "--report", str(report), *requirements], check=True)
        return distributions_of(json.loads(report.read_text()))


def cuda_wheel_folders() -> list[Path]:
    """Where the installed CUDA wheels are: the folders of the `nvidia` namespace package."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("nvidia")
    return [Path(folder) for folder in (spec and spec.submodule_search_locations) or ()]


def remove_gpu_only_libraries(folders: list[Path]) -> int:
    """Delete what only a GPU loads from the CUDA wheels in these folders; the bytes freed."""
    freed = 0
    for folder in folders:
        for pattern in GPU_ONLY_LIBRARIES:
            for library in folder.glob(pattern):
                freed += library.stat().st_size
                library.unlink()
    return freed


def describe(step: list[Distribution]) -> str:
    if len(step) > 3:
        return f"{len(step)} packages"
    return " ".join(d.local_path or f"{d.name}=={d.version}" for d in step)


def main(requirements: list[str]) -> None:
    if not requirements:
        sys.exit(__doc__)
    steps = install_steps(resolve(requirements))
    for number, step in enumerate(steps, start=1):
        print(f"cpu-install: step {number}/{len(steps)}: {describe(step)}", flush=True)
        subprocess.run([*PIP, "--no-deps", *(arg for d in step for arg in d.install_args)], check=True)
        freed = remove_gpu_only_libraries(cuda_wheel_folders())
        if freed:
            print(f"cpu-install: removed {freed / 2**20:.0f} MiB of libraries only a GPU loads", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
