"""trainer-image/cpu_install.py: what `make venv` and the CPU image install, and in what steps.

The install itself runs on every fresh machine (`make venv`, the trainer image's build imports torch
after it); these tests pin the decisions: what is left out, what goes alone, what is deleted.
"""

from __future__ import annotations

from pathlib import Path

from cpu_install import Distribution, distributions_of, install_steps, remove_gpu_only_libraries


def _from_index(name: str, version: str) -> dict:
    url = f"https://files.pythonhosted.org/packages/ab/cd/{name}-{version}-py3-none-any.whl"
    return {
        "metadata": {"name": name, "version": version},
        "download_info": {"url": url, "archive_info": {"hashes": {"sha256": "0" * 64}}},
    }


def _from_folder(name: str, path: str, editable: bool) -> dict:
    return {
        "metadata": {"name": name, "version": "0.1.0"},
        "download_info": {"url": f"file://{path}", "dir_info": {"editable": True} if editable else {}},
    }


def test_a_report_names_releases_and_local_projects() -> None:
    report = {
        "install": [
            _from_index("PyYAML", "6.0.4"),
            _from_index("typing_extensions", "4.16.0"),
            _from_folder("aidc", "/work/my%20checkout", editable=True),
            _from_folder("aidc-trainer", "/work/trainer-image", editable=False),
        ]
    }

    assert distributions_of(report) == [
        Distribution("pyyaml", "6.0.4"),
        Distribution("typing-extensions", "4.16.0"),
        Distribution("aidc", "0.1.0", local_path="/work/my checkout", editable=True),
        Distribution("aidc-trainer", "0.1.0", local_path="/work/trainer-image"),
    ]
    assert distributions_of(report)[0].install_args == ["pyyaml==6.0.4"]
    assert distributions_of(report)[2].install_args == ["-e", "/work/my checkout"]
    assert distributions_of(report)[3].install_args == ["/work/trainer-image"]


def test_small_ones_go_together_each_large_one_alone_and_what_a_cpu_never_loads_not_at_all() -> None:
    numpy = Distribution("numpy", "2.4.6")
    torch = Distribution("torch", "2.15.0")
    cudnn = Distribution("nvidia-cudnn-cu13", "9.26.0.51")
    toolkit = Distribution("cuda-toolkit", "13.2.2")
    project = Distribution("aidc", "0.1.0", local_path="/work", editable=True)
    chosen = [
        numpy,
        Distribution("triton", "3.9.0"),
        torch,
        cudnn,
        Distribution("cuda-bindings", "13.5.0"),
        project,
        toolkit,
        Distribution("jinja2", "3.1.6"),
    ]

    assert install_steps(chosen) == [
        [numpy, Distribution("jinja2", "3.1.6")],
        [torch],
        [cudnn],
        [toolkit],
        [project],
    ]


def test_nothing_to_install_is_no_step() -> None:
    assert install_steps([]) == []
    assert install_steps([Distribution("triton", "3.9.0")]) == []


def test_only_the_libraries_a_gpu_alone_loads_are_deleted(tmp_path: Path) -> None:
    kept = [
        "cudnn/lib/libcudnn.so.9",
        "cu13/lib/libcublasLt.so.13",
        "cu13/lib/libcudart.so.13",
        "nvshmem/lib/libnvshmem_host.so.3",
        "nccl/lib/libnccl.so.2",
    ]
    deleted = [
        "cudnn/lib/libcudnn_engines_precompiled.so.9",
        "cu13/lib/libcusolver.so.12",
        "cu13/lib/libcusolverMg.so.12",
        "cu13/lib/libnvJitLink.so.13",
        "cu13/lib/libnvperf_host.so",
        "nvshmem/lib/libnvshmem_device_sm_90.bc",
    ]
    for number, name in enumerate(kept + deleted, start=1):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * number)

    freed = remove_gpu_only_libraries([tmp_path])

    assert [name for name in kept + deleted if (tmp_path / name).exists()] == kept
    assert freed == sum(range(len(kept) + 1, len(kept) + len(deleted) + 1))
    assert remove_gpu_only_libraries([tmp_path]) == 0


def test_no_cuda_wheels_no_folders() -> None:
    assert remove_gpu_only_libraries([]) == 0
