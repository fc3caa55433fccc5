#!/usr/bin/env python3
"""Write OCI image archives without a container engine (standard library only).

An OCI image archive is a tar file holding an OCI image layout: ``oci-layout``, ``index.json`` and the
content-addressed ``blobs/sha256/<hex>`` (layers, the image config, the manifest). Layers are written
uncompressed (``application/vnd.oci.image.layer.v1.tar``), so a layer's digest is also its diff ID.

The index's manifest descriptor carries ``io.containerd.image.name`` (the full reference) and
``org.opencontainers.image.ref.name`` (the tag), so ``ctr -n k8s.io images import ARCHIVE`` names the image.

Subcommands:

- ``rootfs DIR``: one layer from a root filesystem directory (owners, modes, symlinks and hard links kept;
  device nodes, sockets and the contents of /dev, /proc and /sys left out);
- ``files``: one layer from single files, symlinks and directories placed at given paths;
- ``dir DIR``: the image of a containers/image ``dir:`` directory (``buildah push --format oci IMAGE dir:DIR``,
  which keeps layers uncompressed where buildah's ``oci:`` and ``oci-archive:`` always gzip them), as is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final, Protocol, cast

MEDIA_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_IMAGE_NAME: Final = "io.containerd.image.name"
ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"
OCI_LAYOUT: Final = b'{"imageLayoutVersion":"1.0.0"}'
PLATFORM: Final = {"architecture": "amd64", "os": "linux"}
DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# directories whose contents belong to the runtime, not the image (the directories themselves are kept)
RUNTIME_DIRS: Final = frozenset({"dev", "proc", "sys"})
COPY_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class Blob:
    """A blob in the layout: its digest, size and media type."""

    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        """The OCI content descriptor of this blob."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (what a Dockerfile's ENTRYPOINT, CMD, USER, ENV, WORKDIR set)."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    env: tuple[str, ...] = (DEFAULT_PATH,)
    workdir: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``config`` object of the image config, without unset fields."""
        config: dict[str, Any] = {"Env": list(self.env)}
        if self.entrypoint is not None:
            config["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            config["Cmd"] = self.cmd
        if self.user:
            config["User"] = self.user
        if self.workdir:
            config["WorkingDir"] = self.workdir
        if self.labels:
            config["Labels"] = dict(self.labels)
        return config


@dataclass(frozen=True)
class Entry:
    """One entry of a ``files`` layer: a file copied from the host, a symlink or a directory."""

    dest: str
    source: Path | None = None
    link_target: str | None = None
    mode: int | None = None


class Sink(Protocol):
    """Where a layer tar is written: anything with ``write``."""

    def write(self, data: bytes, /) -> int:
        """Write ``data``."""
        ...


LayerWriter = Callable[[Sink], None]


class HashingWriter:
    """A write-only file object that hashes and counts what passes through it into ``sink``."""

    def __init__(self, sink: IO[bytes]) -> None:
        """Wrap ``sink``."""
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        """Write ``data`` to the sink, hashing it."""
        self.sha256.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def digest(self) -> str:
        """The ``sha256:<hex>`` digest of everything written so far."""
        return f"sha256:{self.sha256.hexdigest()}"


def split_ref(ref: str) -> str:
    """The tag of an image reference (``localhost/aidc-base:bookworm`` -> ``bookworm``); ``latest`` if none."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: the same value always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def blob_path(layout: Path, digest: str) -> Path:
    """Where a blob with ``digest`` lives in an OCI layout directory."""
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


def put_bytes(layout: Path, data: bytes, media_type: str) -> Blob:
    """Store ``data`` as a blob in ``layout``."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    path = blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Blob(digest, len(data), media_type)


def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Numeric owners only (no host user names) and whole-second mtimes (no PAX header per file)."""
    info.uname = ""
    info.gname = ""
    info.mtime = int(info.mtime)
    return info


def walk_rootfs(root: Path) -> Iterator[tuple[Path, str]]:
    """Every path under ``root`` in sorted order, with its name in the layer; runtime directories empty."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        relative = here.relative_to(root).as_posix()
        if relative in RUNTIME_DIRS:
            dirnames.clear()
            continue
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = here / name
            yield path, (path.relative_to(root).as_posix())


def add_path(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    """Add one file system entry (not recursing); tarfile turns a repeated inode into a hard link."""
    info = tar.gettarinfo(str(path), arcname)
    if info is None or info.ischr() or info.isblk():
        return  # sockets and device nodes: the runtime provides /dev
    info = normalize(info)
    if info.isreg():
        with path.open("rb") as source:
            tar.addfile(info, source)
    else:
        tar.addfile(info)


def open_stream(sink: Sink) -> tarfile.TarFile:
    """A tar writer streaming into ``sink`` (no seeking, so the sink may hash what it gets)."""
    return tarfile.open(fileobj=cast(IO[bytes], sink), mode="w|", format=tarfile.PAX_FORMAT)


def write_rootfs_layer(root: Path, sink: Sink) -> None:
    """Write the root filesystem under ``root`` as an uncompressed layer tar to ``sink``."""
    with open_stream(sink) as tar:
        for path, arcname in walk_rootfs(root):
            add_path(tar, path, arcname)


def parent_dirs(dests: Sequence[str]) -> list[str]:
    """The directories above the given image paths, without the root, parents first."""
    parents: set[str] = set()
    for dest in dests:
        for parent in PurePosixPath(dest.strip("/")).parents:
            if str(parent) != ".":
                parents.add(str(parent))
    return sorted(parents)


def dir_info(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    """A root-owned directory entry."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info


def entry_info(entry: Entry) -> tarfile.TarInfo:
    """The tar header of one ``files`` entry (root-owned; a copied file keeps its mode unless given one)."""
    name = entry.dest.strip("/")
    if entry.link_target is not None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link_target
        info.mode = 0o777
        return info
    if entry.source is None:
        return dir_info(name, 0o755 if entry.mode is None else entry.mode)
    status = entry.source.stat()
    info = tarfile.TarInfo(name)
    info.size = status.st_size
    info.mode = stat.S_IMODE(status.st_mode) if entry.mode is None else entry.mode
    info.mtime = int(status.st_mtime)
    return info


def write_files_layer(entries: Sequence[Entry], sink: Sink) -> None:
    """Write a layer holding ``entries`` (and the directories above them) to ``sink``."""
    explicit_dirs = {e.dest.strip("/") for e in entries if e.source is None and e.link_target is None}
    with open_stream(sink) as tar:
        for name in parent_dirs([e.dest for e in entries]):
            if name not in explicit_dirs:
                tar.addfile(dir_info(name))
        for entry in sorted(entries, key=lambda e: e.dest.strip("/")):
            info = entry_info(entry)
            if entry.source is not None and entry.link_target is None:
                with entry.source.open("rb") as source:
                    tar.addfile(info, source)
            else:
                tar.addfile(info)


def put_layer(layout: Path, write: LayerWriter) -> Blob:
    """Run ``write(sink)`` into a temporary file in ``layout`` and store the result as a layer blob."""
    scratch = layout / "layer.tmp"
    with scratch.open("wb") as raw:
        writer = HashingWriter(raw)
        write(writer)
    blob = Blob(writer.digest(), writer.size, MEDIA_LAYER)
    target = blob_path(layout, blob.digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch.replace(target)
    return blob


def image_config_json(config: ImageConfig, layers: Sequence[Blob], created_by: str) -> dict[str, Any]:
    """The OCI image config for ``layers`` (uncompressed, so each diff ID is the layer's digest)."""
    return {
        **PLATFORM,
        "config": config.to_json(),
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created_by": created_by}],
    }


def write_image(layout: Path, config: ImageConfig, layers: Sequence[Blob], created_by: str) -> Blob:
    """Store the config and the manifest of an image made of ``layers``; returns the manifest blob."""
    config_blob = put_bytes(layout, canonical_json(image_config_json(config, layers, created_by)), MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return put_bytes(layout, canonical_json(manifest), MEDIA_MANIFEST)


def name_annotations(ref: str) -> dict[str, str]:
    """The annotations that name an image for containerd's import."""
    return {ANNOTATION_IMAGE_NAME: ref, ANNOTATION_REF_NAME: split_ref(ref)}


def write_index(layout: Path, manifest: dict[str, Any]) -> None:
    """Write ``oci-layout`` and an ``index.json`` listing the single ``manifest`` descriptor."""
    (layout / "oci-layout").write_bytes(OCI_LAYOUT)
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest]}
    (layout / "index.json").write_bytes(canonical_json(index))


def config_platform(config: bytes) -> dict[str, str]:
    """The platform an image config names."""
    parsed = json.loads(config)
    return {"architecture": parsed.get("architecture", "amd64"), "os": parsed.get("os", "linux")}


def link_blob(source: Path, target: Path) -> None:
    """Put ``source`` at ``target``: a hard link where possible (same file system), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def layout_from_dir(source: Path, layout: Path, ref: str) -> None:
    """Lay out the image of a ``dir:`` directory (manifest.json, blobs named by their hex digest) as OCI."""
    manifest_bytes = (source / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    if manifest.get("mediaType") != MEDIA_MANIFEST:
        raise SystemExit(f"{source}: not an OCI image manifest (push with --format oci)")
    for descriptor in [manifest["config"], *manifest["layers"]]:
        link_blob(source / descriptor["digest"].split(":", 1)[1], blob_path(layout, descriptor["digest"]))
    blob = put_bytes(layout, manifest_bytes, MEDIA_MANIFEST)
    platform = config_platform(blob_path(layout, manifest["config"]["digest"]).read_bytes())
    write_index(layout, {**blob.descriptor(), "annotations": name_annotations(ref), "platform": platform})


def archive_layout(layout: Path, out: Path) -> None:
    """Tar the layout directory (sorted, root-owned entries) into ``out``, atomically."""
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in layout.rglob("*") if p.name != "layer.tmp"):
            info = normalize(tar.gettarinfo(str(path), path.relative_to(layout).as_posix()))
            info.uid = info.gid = 0
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isreg():
                with path.open("rb") as source:
                    tar.addfile(info, source)
            else:
                tar.addfile(info)
    partial.replace(out)


def staged_archive(out: Path, fill: Callable[[Path], None]) -> None:
    """Run ``fill(layout)`` on a staging layout directory next to ``out``, then archive it as ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=out.name + ".", dir=out.parent) as staging:
        fill(Path(staging))
        archive_layout(Path(staging), out)


def build_archive(out: Path, ref: str, config: ImageConfig, write_layer: LayerWriter, created_by: str) -> None:
    """Write a one-layer image named ``ref`` to the archive ``out``."""

    def fill(layout: Path) -> None:
        layer = put_layer(layout, write_layer)
        manifest = write_image(layout, config, [layer], created_by)
        write_index(layout, {**manifest.descriptor(), "annotations": name_annotations(ref), "platform": PLATFORM})

    staged_archive(out, fill)


def parse_pair(text: str, option: str) -> tuple[str, str]:
    """Split ``LEFT=RIGHT`` (``option`` names the flag in the error)."""
    left, sep, right = text.partition("=")
    if not sep or not left:
        raise SystemExit(f"{option}: expected LEFT=RIGHT, got {text!r}")
    return left, right


def parse_entries(args: argparse.Namespace) -> list[Entry]:
    """The ``files`` entries from ``--file DEST=SRC``, ``--symlink DEST=TARGET`` and ``--dir DEST[=MODE]``."""
    entries: list[Entry] = []
    for text in args.file:
        dest, source = parse_pair(text, "--file")
        entries.append(Entry(dest, source=Path(source)))
    for text in args.symlink:
        dest, target = parse_pair(text, "--symlink")
        entries.append(Entry(dest, link_target=target))
    for text in args.dir:
        dest, _, mode = text.partition("=")
        entries.append(Entry(dest, mode=int(mode, 8) if mode else None))
    return entries


def parse_config(args: argparse.Namespace) -> ImageConfig:
    """The image config from the common options."""
    env = tuple(args.env) if args.env else (DEFAULT_PATH,)
    labels = tuple(parse_pair(text, "--label") for text in args.label)
    return ImageConfig(
        entrypoint=json.loads(args.entrypoint) if args.entrypoint else None,
        cmd=json.loads(args.cmd) if args.cmd else None,
        user=args.user,
        env=env,
        workdir=args.workdir,
        labels=labels,
    )


def add_common(parser: argparse.ArgumentParser, config: bool = True) -> None:
    """The options every subcommand takes (and, with ``config``, the image config options)."""
    parser.add_argument("--ref", required=True, help="full image reference, e.g. localhost/aidc-base:bookworm")
    parser.add_argument("--out", required=True, type=Path, help="the archive to write")
    if not config:
        return
    parser.add_argument("--entrypoint", help="JSON list, e.g. '[\"/pause\"]'")
    parser.add_argument("--cmd", help="JSON list")
    parser.add_argument("--user", help="uid[:gid]")
    parser.add_argument("--env", action="append", default=[], help=f"KEY=VALUE, repeatable (default {DEFAULT_PATH})")
    parser.add_argument("--workdir")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE, repeatable")


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rootfs = commands.add_parser("rootfs", help="one layer from a root filesystem directory")
    rootfs.add_argument("root", type=Path)
    add_common(rootfs)
    files = commands.add_parser("files", help="one layer from single files, symlinks and directories")
    files.add_argument("--file", action="append", default=[], help="DEST=SRC: copy SRC to DEST in the image")
    files.add_argument("--symlink", action="append", default=[], help="DEST=TARGET: a symlink at DEST")
    files.add_argument("--dir", action="append", default=[], help="DEST[=MODE]: a directory (octal mode)")
    add_common(files)
    directory = commands.add_parser("dir", help="archive the image of a containers/image dir: directory")
    directory.add_argument("source", type=Path)
    add_common(directory, config=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    out: Path = args.out.absolute()
    if args.command == "rootfs":
        root: Path = args.root
        if not root.is_dir():
            raise SystemExit(f"{root}: not a directory")
        build_archive(out, args.ref, parse_config(args), lambda sink: write_rootfs_layer(root, sink), "rootfs")
    elif args.command == "files":
        entries = parse_entries(args)
        names = " ".join(e.dest for e in entries if e.source is not None)
        build_archive(out, args.ref, parse_config(args), lambda sink: write_files_layer(entries, sink), names)
    else:
        source: Path = args.source
        staged_archive(out, lambda layout: layout_from_dir(source, layout, args.ref))
    print(f"{out}: {args.ref} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
