"""The examples a task trains on, loaded into memory and split train/validation.

Sources: ``synthetic`` (generated from the seed, nothing to mount), ``digits`` (scikit-learn's
8x8 digits, shipped inside the package, resized to 28x28), ``npz`` and ``image-folder`` files on
the data claim, and a ``text`` file for the language model (byte-level tokens, so any file works
and the vocabulary is always 256). Every rank loads the same data and the split depends on the
seed only, so all ranks agree on it without talking; the sampler then shards the training set.

Problems with the data itself (missing path, wrong shape, too few examples) raise ``DataError``
(exit 65): the job cannot succeed until someone fixes its input, so it must not be retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from aidc_trainer.config import TrainerConfig
from aidc_trainer.errors import ConfigError, DataError

IMAGE_SIZE: Final = 28  # the classifier's native input; image folders are resized to it
VOCAB_SIZE: Final = 256  # byte-level tokens


@dataclass(frozen=True)
class ImageData:
    """Images as float32 (N, C, H, W) in [0, 1] with int64 labels."""

    train: TensorDataset
    validation: TensorDataset | None
    classes: list[str]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.tensors[0].shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class TokenData:
    """Token windows as int64 (N, context + 1): inputs are [:-1], targets [1:]."""

    train: TensorDataset
    validation: TensorDataset | None
    vocab_size: int = VOCAB_SIZE


def resolve_path(path: str, data_dir: Path | None) -> Path:
    """``path`` as given when absolute, else under the data claim; it must exist."""
    candidate = Path(path)
    if not candidate.is_absolute():
        if data_dir is None:
            raise DataError(f"dataset path {path!r} is relative but no data claim is mounted (AIDC_DATA_DIR)")
        candidate = data_dir / candidate
    if not candidate.exists():
        raise DataError(f"dataset path {candidate} does not exist")
    return candidate


def _split(
    count: int, fraction: float, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation indices; stratified when every class has two examples."""
    indices = np.arange(count)
    validation_count = int(count * fraction)
    if validation_count == 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split

    stratify = None
    if labels is not None:
        _, per_class = np.unique(labels, return_counts=True)
        if per_class.min() >= 2 and validation_count >= len(per_class):
            stratify = labels
    train, validation = train_test_split(
        indices, test_size=validation_count, random_state=seed, shuffle=True, stratify=stratify
    )
    return np.sort(train), np.sort(validation)


def _image_data(
    images: torch.Tensor, labels: torch.Tensor, classes: list[str], config: TrainerConfig
) -> ImageData:
    train, validation = _split(len(images), config.validation_fraction, config.seed, labels.numpy())
    if len(train) == 0:
        raise DataError("the dataset has no training examples left after the validation split")
    train_index, validation_index = torch.from_numpy(train), torch.from_numpy(validation)
    return ImageData(
        train=TensorDataset(images[train_index].contiguous(), labels[train_index].contiguous()),
        validation=(
            TensorDataset(images[validation_index].contiguous(), labels[validation_index].contiguous())
            if len(validation)
            else None
        ),
        classes=classes,
    )


def _synthetic_images(config: TrainerConfig) -> ImageData:
    """Ten smooth random prototypes plus noise: learnable, and different for every seed."""
    generator = torch.Generator().manual_seed(config.seed)
    classes = 10
    prototypes = F.interpolate(
        torch.rand(classes, 1, 7, 7, generator=generator),
        size=IMAGE_SIZE,
        mode="bilinear",
        align_corners=False,
    )
    labels = torch.arange(config.dataset.samples) % classes
    labels = labels[torch.randperm(len(labels), generator=generator)]
    noise = 0.25 * torch.randn(len(labels), 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    images = (prototypes[labels] + noise).clamp(0, 1)
    return _image_data(images, labels, [f"class-{index}" for index in range(classes)], config)


def _digits(config: TrainerConfig) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (bundled, no download), scaled to [0, 1] and 28x28."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=IMAGE_SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return _image_data(images.contiguous(), labels, [str(index) for index in range(10)], config)


def _as_image_tensor(array: np.ndarray, where: str) -> torch.Tensor:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} -> float32 (N, C, H, W) in [0, 1]."""
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] == 0:
        raise DataError(
            f"{where} must have shape (N, H, W), (N, C, H, W) or (N, H, W, C) with C 1 or 3; "
            f"got {tuple(array.shape)}"
        )
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0).contiguous()
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{where} must be numeric, got dtype {array.dtype}")
    tensor = torch.from_numpy(array.astype(np.float32)).contiguous()
    if not torch.isfinite(tensor).all():
        raise DataError(f"{where} contains NaN or infinite values")
    return tensor


def _labels(array: np.ndarray | None, count: int, where: str, need_labels: bool) -> torch.Tensor:
    if array is None:
        if need_labels:
            raise DataError(f"{where} has no labels (key 'y') and the classifier needs them")
        return torch.zeros(count, dtype=torch.int64)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise DataError(
            f"{where} labels 'y' must be {count} non-negative integers, got shape "
            f"{tuple(array.shape)} of {array.dtype}"
        )
    return torch.from_numpy(array.astype(np.int64))


def _npz(config: TrainerConfig, data_dir: Path | None, need_labels: bool) -> ImageData:
    path = resolve_path(config.dataset.path or "", data_dir)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path} is a single array, not an .npz archive with arrays 'x' and 'y'")
    try:
        with loaded as archive:
            if "x" not in archive:
                raise DataError(f"{path} has no array 'x' (found: {', '.join(archive.files) or 'nothing'})")
            images = _as_image_tensor(archive["x"], f"{path}['x']")
            labels = _labels(archive.get("y"), len(images), str(path), need_labels)
            names = [str(name) for name in archive["classes"]] if "classes" in archive else None
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from error
    classes = names or [str(index) for index in range(int(labels.max()) + 1)]
    if int(labels.max()) >= len(classes):
        raise DataError(f"{path} has label {int(labels.max())} but only {len(classes)} classes")
    return _image_data(images, labels, classes, config)


def _image_folder(config: TrainerConfig, data_dir: Path | None) -> ImageData:
    """One subfolder per class; images resized to 28x28, grayscale unless any image is colour."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(
            "dataset source image-folder needs Pillow: pip install 'aidc-trainer[images]'"
        ) from None
    root = resolve_path(config.dataset.path or "", data_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory of class folders")
    classes = sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]
    if not files:
        raise DataError(f"{root} has no images in class subfolders")
    opened = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append(image.copy())
        except OSError as error:
            raise DataError(f"cannot read image {path}: {error}") from error
    mode = "RGB" if any(image.mode not in ("L", "1", "I", "I;16", "F") for image in opened) else "L"
    arrays = [
        np.asarray(image.convert(mode).resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.uint8) for image in opened
    ]
    stacked = np.stack(arrays)
    images = _as_image_tensor(stacked if mode == "L" else stacked.transpose(0, 3, 1, 2), str(root))
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return _image_data(images, labels, classes, config)


def load_images(config: TrainerConfig, data_dir: Path | None, *, need_labels: bool = True) -> ImageData:
    """The image dataset the config names."""
    source = config.dataset.source
    if source == "synthetic":
        return _synthetic_images(config)
    if source == "digits":
        return _digits(config)
    if source == "npz":
        return _npz(config, data_dir, need_labels)
    if source == "image-folder":
        return _image_folder(config, data_dir)
    raise ConfigError(f"dataset source {source} holds no images")


def _synthetic_text(config: TrainerConfig, length: int) -> bytes:
    """Sentences from a small random grammar: enough structure for a loss curve that falls."""
    rng = np.random.RandomState(config.seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.randint(2, 8))) for _ in range(64)]
    successors = rng.randint(0, len(words), size=(len(words), 3))
    out: list[str] = []
    size, word = 0, 0
    while size < length:
        sentence = []
        for _ in range(rng.randint(4, 10)):
            sentence.append(words[word])
            word = int(successors[word, rng.randint(0, 3)])
        text = " ".join(sentence).capitalize() + ". "
        out.append(text)
        size += len(text)
    return "".join(out).encode()[:length]


def load_tokens(config: TrainerConfig, data_dir: Path | None) -> TokenData:
    """Byte tokens cut into windows of context + 1; the last fraction of windows validates."""
    window = config.language_model.context_length + 1
    source = config.dataset.source
    if source == "synthetic":
        raw = _synthetic_text(config, config.dataset.samples * config.language_model.context_length + 1)
    elif source == "text":
        path = resolve_path(config.dataset.path or "", data_dir)
        if not path.is_file():
            raise DataError(f"dataset path {path} is not a file")
        raw = path.read_bytes()
    else:
        raise ConfigError(f"dataset source {source} holds no text")
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
    stride = config.language_model.context_length
    count = (len(tokens) - 1) // stride
    if count < 2:
        raise DataError(
            f"the text has {len(tokens)} bytes; it needs at least {2 * stride + 1} for contextLength {stride}"
        )
    windows = torch.stack([tokens[index * stride : index * stride + window] for index in range(count)])
    validation_count = int(count * config.validation_fraction)
    train = windows[: count - validation_count].contiguous()
    validation = windows[count - validation_count :].contiguous()
    return TokenData(
        train=TensorDataset(train),
        validation=TensorDataset(validation) if validation_count else None,
    )
