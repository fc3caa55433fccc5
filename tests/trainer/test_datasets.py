"""Datasets load to the documented shapes, split deterministically, and bad files fail with
DataError (exit 65) rather than a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.config import parse_config
from aidc_trainer.datasets import load_images, load_tokens
from aidc_trainer.errors import DataError
from aidc_trainer.sampling import ResumableSampler, batches_per_epoch, iterate_batches


def config(**raw: Any) -> Any:
    return parse_config({"task": "classifier", **raw})


def test_digits_are_28x28_in_unit_range_and_split_the_same_way_every_time() -> None:
    data = load_images(config(dataset={"source": "digits"}), None)
    images, labels = data.train.tensors
    assert data.image_shape == (1, 28, 28)
    assert images.dtype == torch.float32 and float(images.min()) >= 0 and float(images.max()) <= 1
    assert data.validation is not None
    assert len(images) + len(data.validation) == 1797
    assert len(data.validation) == int(1797 * 0.2)
    assert data.classes == [str(d) for d in range(10)]
    assert set(labels.tolist()) == set(range(10))
    again = load_images(config(dataset={"source": "digits"}), None)
    assert torch.equal(again.train.tensors[0], images)
    other_seed = load_images(config(dataset={"source": "digits"}, seed=1), None)
    assert not torch.equal(other_seed.train.tensors[1], labels)


def test_npz_in_every_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layouts: dict[str, np.ndarray] = {
        "nhw": rng.integers(0, 255, (30, 28, 28), dtype=np.uint8),
        "nchw": rng.random((30, 1, 28, 28), dtype=np.float32),
        "nhwc": rng.integers(0, 255, (30, 28, 28, 3), dtype=np.uint8),
    }
    for name, x in layouts.items():
        np.savez(tmp_path / f"{name}.npz", x=x, y=np.arange(30) % 3)
        data = load_images(config(dataset={"source": "npz", "path": f"{name}.npz"}), tmp_path)
        assert data.image_shape == ((3, 28, 28) if name == "nhwc" else (1, 28, 28))
        assert data.classes == ["0", "1", "2"]
        assert float(data.train.tensors[0].max()) <= 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 784))}, "must have shape"),
        ({"images": np.zeros((10, 28, 28))}, "has no array 'x'"),
        ({"x": np.zeros((10, 28, 28))}, "has no labels"),
        ({"x": np.zeros((10, 28, 28)), "y": np.zeros(9, dtype=np.int64)}, "labels 'y' must be 10"),
        ({"x": np.full((10, 28, 28), np.nan), "y": np.zeros(10, dtype=np.int64)}, "NaN"),
    ],
)
def test_npz_problems_are_data_errors(arrays: dict[str, np.ndarray], message: str, tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as caught:
        load_images(config(dataset={"source": "npz", "path": "bad.npz"}), tmp_path)
    assert caught.value.exit_code == contract.EXIT_DATA_ERROR


def test_missing_or_relative_paths_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_images(config(dataset={"source": "npz", "path": str(tmp_path / "nope.npz")}), None)
    with pytest.raises(DataError, match="no data claim is mounted"):
        load_images(config(dataset={"source": "npz", "path": "nope.npz"}), None)
    (tmp_path / "plain.npy").write_bytes(b"")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(DataError, match="single array"):
        load_images(config(dataset={"source": "npz", "path": "plain.npy"}), tmp_path)


def test_image_folder_one_class_per_subfolder(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    for label, shade in (("cat", 30), ("dog", 220)):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for index in range(5):
            image.new("L", (40, 32), color=shade + index).save(tmp_path / "pets" / label / f"{index}.png")
    data = load_images(config(dataset={"source": "image-folder", "path": "pets"}, validationFraction=0.2), tmp_path)
    assert data.classes == ["cat", "dog"]
    assert data.image_shape == (1, 28, 28)
    assert len(data.train) == 8 and data.validation is not None and len(data.validation) == 2
    cats = data.train.tensors[0][data.train.tensors[1] == 0]
    assert float(cats.mean()) < 0.2


def test_text_windows_overlap_by_one_token(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_bytes(bytes(range(256)) * 2)
    lm = parse_config(
        {
            "task": "language-model",
            "dataset": {"source": "text", "path": "corpus.txt"},
            "validationFraction": 0.25,
            "languageModel": {"contextLength": 16},
        }
    )
    data = load_tokens(lm, tmp_path)
    windows = data.train.tensors[0]
    assert windows.shape[1] == 17
    assert torch.equal(windows[0], torch.arange(17))
    assert windows[1, 0] == 16  # the next window starts where the previous one's inputs ended
    assert data.validation is not None and len(data.validation) == (511 // 16) // 4
    (tmp_path / "short.txt").write_bytes(b"tiny")
    with pytest.raises(DataError, match="needs at least"):
        load_tokens(parse_config({**lm.to_json(), "dataset": {"source": "text", "path": "short.txt"}}), tmp_path)


def test_sampler_resumes_mid_epoch_where_it_left_off() -> None:
    data = load_images(config(dataset={"source": "synthetic", "samples": 100}), None)
    sampler = ResumableSampler(data.train, num_replicas=2, rank=1, seed=3)
    sampler.set_epoch(4)
    full = list(iterate_batches(data.train, sampler, 8))
    assert len(full) == batches_per_epoch(sampler, 8) == 5
    sampler.set_epoch(4)
    sampler.skip_next(3 * 8)
    rest = list(iterate_batches(data.train, sampler, 8))
    assert len(rest) == 2
    for expected, got in zip(full[3:], rest, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert len(list(iterate_batches(data.train, sampler, 8))) == 5  # the skip applies once
