#!/usr/bin/env bash
# Build the project's container images without Docker into OCI archives under .cache/images/
# (`make images`). Each image is rebuilt only when its inputs changed: next to every archive a
# stamp holds the hash of what it was built from (the recipe below, the Dockerfile and the files
# it copies, the base image it builds on). See hack/images/README.md.
#
#   aidc-base      debootstrap'd Debian bookworm (minbase + python3, venv, pip), written by oci.py
#   aidc-operator  buildah bud operator/Dockerfile FROM aidc-base
#   aidc-trainer   buildah bud trainer-image/Dockerfile (VARIANT=cpu) FROM aidc-base
#   pause          pause.c from the k8s.io/kubernetes module, gcc -static (the sandbox image)
#   coredns        .cache/tools/bin/coredns (skipped until `make tools` built it)
#
# .cache/images/images.json lists {"ref", "archive"} of every image, for the nodes to import:
#   ctr -n k8s.io images import ARCHIVE
# Environment: DEBIAN_MIRROR (default: the host's), PYTHON (runs oci.py; default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly ROOT
readonly HERE=$ROOT/hack/images
readonly OUT=$ROOT/.cache/images
readonly LOGS=$OUT/logs
readonly BUILDAH_DIR=$ROOT/.cache/buildah
readonly TOOLS_BIN=$ROOT/.cache/tools/bin
readonly CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
readonly SUITE=bookworm
readonly BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates,python-is-python3
readonly BASE_PATH=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# containerd 2.4's default sandbox image; the version of build/pause in Kubernetes 1.37 too
readonly PAUSE_VERSION=3.10.2
PYTHON=${PYTHON:-python3}
OCI=("$PYTHON" "$HERE/oci.py")
BUILDAH=(buildah --root "$BUILDAH_DIR/root" --runroot "$BUILDAH_DIR/runroot" --storage-driver overlay)

# shellcheck source-path=SCRIPTDIR source=../tools/versions.env
source "$ROOT/hack/tools/versions.env"

BUILT=0
STEP_STARTED=$SECONDS
IMAGES=()

say() { printf 'images: %s\n' "$*" >&2; }
die() { say "error: $*"; say "$(free_space)"; exit 1; }

# GiB free on the file system of .cache/images
free_gib() { df --output=avail -B1G "$ROOT" | tail -n 1 | tr -d ' '; }
free_space() { printf '%s GiB free on the file system of %s' "$(free_gib)" "$ROOT"; }

# Buildah's storage is a cache of layers for the next build (a trainer code change reuses the torch
# layer); the archives are the product. Where the disk is short (a fresh CI machine), it goes as soon as
# an image is pushed and checked, before its archive is written: the image is then on disk twice (the
# pushed folder, the archive) at most, never three times, and its size is free again before the nodes
# import it.
readonly KEEP_BUILDAH_CACHE_GIB=${AIDC_KEEP_BUILDAH_CACHE_GIB:-40}
disk_is_short() { (($(free_gib) < KEEP_BUILDAH_CACHE_GIB)); }
prune_build_cache() {
    disk_is_short && [[ -n $("${BUILDAH[@]}" images --quiet 2>/dev/null) ]] || return 0
    say "$(free_space), under $KEEP_BUILDAH_CACHE_GIB: removing buildah's layer cache in $BUILDAH_DIR"
    "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
    "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1 || true
    say "$(free_space)"
}

# Short of disk, the trainer's build (~8 GB at its peak: its layers, a commit's copy of one, the pushed
# folder) waits for the Go build of the tools (~7 GB of caches at its peak) that `make test` and
# `make demo` run beside it, instead of needing both at once; the smaller images build meanwhile.
# build-tools.sh waits on its lock while another builds, and is a no-op once the tools are built.
wait_for_tools_when_short() {
    disk_is_short || return 0
    say "$(free_space), under $KEEP_BUILDAH_CACHE_GIB: waiting for the tools' Go build before the trainer's"
    logged tools "$ROOT/hack/build-tools.sh"
    say "$(free_space)"
}

# the host's Debian mirror (deb822 sources first), or deb.debian.org
host_mirror() {
    local uri
    uri=$(grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1 |
        awk '{print $2}') || true
    if [[ -z $uri ]]; then
        uri=$(grep -hoE '^deb[[:space:]]+\S+' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 |
            awk '{print $2}') || true
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# the version field of a pyproject.toml
project_version() {
    "$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$1"
}

# sha256 of stdin
digest() { sha256sum | cut -d ' ' -f 1; }

# names and contents of the files under the given paths (relative to the repository), caches left out
hash_files() {
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum)
}

archive_of() { printf '%s/%s.oci.tar\n' "$OUT" "$1"; }

# true when NAME's archive exists and was built from inputs hashing to KEY
up_to_date() {
    local archive
    archive=$(archive_of "$1")
    [[ -f $archive && -f $archive.stamp && $(<"$archive.stamp") == "$2" ]]
}

# record NAME's archive as built from KEY
mark_built() {
    local archive
    archive=$(archive_of "$1")
    printf '%s\n' "$2" >"$archive.stamp"
    BUILT=$((BUILT + 1))
    say "$1: built in $((SECONDS - STEP_STARTED)) s: $archive ($(du -m "$archive" | cut -f 1) MB)"
}

# list image REF (archive NAME) in images.json
register() { IMAGES+=("$1" "$(archive_of "$2")"); }

# list REF as NAME's image; false (and say so) when its archive is already built from KEY
needs_build() {
    register "$1" "$2"
    if up_to_date "$2" "$3"; then
        say "$2: up to date"
        return 1
    fi
}

# start NAME's build: say what it does, and begin a fresh LOGS/NAME.log
begin() {
    local name=$1
    shift
    : >"$LOGS/$name.log"
    STEP_STARTED=$SECONDS
    say "$name: $*"
}

# run a command with its output in LOGS/NAME.log, showing the log's end if it fails
logged() {
    local name=$1 log
    shift
    log=$LOGS/$name.log
    if ! "$@" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "$name: '$*' failed (full log: $log)"
    fi
}

# remove a directory tree, first unmounting what an interrupted debootstrap left mounted in it
remove_tree() {
    local dir=$1 mnt
    [[ -e $dir ]] || return 0
    while read -r mnt; do
        umount -l "$mnt"
    done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
    rm -rf --one-file-system "$dir"
}

# make a debootstrap'd tree a container base: pip usable as on python:*-slim, no caches, no host
# files, and slim as Debian's *-slim images (no docs but the copyrights, no man pages, no locales;
# dpkg keeps later installs that way too)
trim_rootfs() {
    local root=$1
    rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
    cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/ldconfig/aux-cache \
        "$root"/var/log/* "$root"/var/lib/dpkg/*-old "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/root/.cache
    mkdir -p "$root/var/lib/apt/lists/partial"
    # the runtime provides these; debootstrap copied the host's
    : >"$root/etc/resolv.conf"
    rm -f "$root/etc/hostname"
    # apt sources as in Debian's own images (updates and security too, for a later apt-get upgrade)
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

build_base() {
    local ref=localhost/aidc-base:$SUITE mirror key rootfs=$OUT/rootfs/base
    mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    key=$({
        declare -f build_base trim_rootfs
        echo "$SUITE $BASE_PACKAGES $mirror"
        hash_files hack/images/oci.py
    } | digest)
    needs_build "$ref" aidc-base "$key" || return 0
    begin aidc-base "debootstrap $SUITE from $mirror (a few minutes)"
    remove_tree "$rootfs"
    mkdir -p "$OUT/rootfs"
    logged aidc-base debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror"
    trim_rootfs "$rootfs"
    logged aidc-base "${OCI[@]}" rootfs "$rootfs" --ref "$ref" --out "$(archive_of aidc-base)" \
        --env "$BASE_PATH" --env LANG=C.UTF-8 --cmd '["python3"]'
    remove_tree "$rootfs"
    rmdir "$OUT/rootfs" 2>/dev/null || true
    mark_built aidc-base "$key"
}

# make the base archive the local image localhost/aidc-base:SUITE in buildah's storage
load_base() {
    local id
    id=$("${BUILDAH[@]}" pull -q "oci-archive:$(archive_of aidc-base)" | tail -n 1)
    "${BUILDAH[@]}" tag "$id" "localhost/aidc-base:$SUITE"
}

# buildah bud NAME REF CONTEXT DOCKERFILE [BUD_ARGS...]: build REF and push it to NAME's folder. The
# host's CA bundle is mounted into RUN steps (pip behind a TLS-inspecting proxy), not copied into the
# image. Pushed to a dir: directory, whose layers stay uncompressed (buildah 1.28 gzips oci: layers
# even with --disable-compression); archive_pushed writes the archive.
buildah_image() {
    local name=$1 ref=$2 context=$3 dockerfile=$4
    shift 4
    logged "$name" "${BUILDAH[@]}" bud --isolation chroot --network host --layers --force-rm --pull=never \
        --volume "$CA_BUNDLE:$CA_BUNDLE:ro" --file "$dockerfile" --tag "$ref" "$@" "$context"
    rm -rf "$(pushed_of "$name")"
    logged "$name" "${BUILDAH[@]}" push --quiet --disable-compression --format oci "$ref" "dir:$(pushed_of "$name")"
}

pushed_of() { printf '%s/%s.pushed\n' "$OUT" "$1"; }

# archive NAME's pushed folder as REF with the names containerd's import reads (oci.py), then remove it
archive_pushed() {
    logged "$1" "${OCI[@]}" dir "$(pushed_of "$1")" --ref "$2" --out "$(archive_of "$1")"
    rm -rf "$(pushed_of "$1")"
}

# run a command in a throwaway container of image REF (as the image's user)
smoke() {
    local name=$1 ref=$2 container
    shift 2
    container=$("${BUILDAH[@]}" from --pull=never --quiet "$ref")
    if ! "${BUILDAH[@]}" run --isolation chroot --network host "$container" -- "$@" >>"$LOGS/$name.log" 2>&1; then
        "${BUILDAH[@]}" rm "$container" >/dev/null
        tail -n 20 "$LOGS/$name.log" >&2
        die "$name: '$*' failed in the image"
    fi
    "${BUILDAH[@]}" rm "$container" >/dev/null
}

build_operator() {
    local ref key base_key
    ref=localhost/aidc-operator:$(project_version "$ROOT/pyproject.toml")
    base_key=$(<"$(archive_of aidc-base).stamp")
    key=$({
        declare -f build_operator buildah_image archive_pushed
        echo "$ref $base_key"
        hash_files operator/Dockerfile .dockerignore pyproject.toml README.md operator/aidc
    } | digest)
    needs_build "$ref" aidc-operator "$key" || return 0
    begin aidc-operator "buildah bud operator/Dockerfile -> $ref"
    load_base
    buildah_image aidc-operator "$ref" "$ROOT" "$ROOT/operator/Dockerfile" \
        --build-arg "PYTHON_IMAGE=localhost/aidc-base:$SUITE"
    smoke aidc-operator "$ref" aidc --help
    prune_build_cache
    archive_pushed aidc-operator "$ref"
    mark_built aidc-operator "$key"
}

build_trainer() {
    local ref key base_key
    ref=localhost/aidc-trainer:$(project_version "$ROOT/trainer-image/pyproject.toml")-cpu
    base_key=$(<"$(archive_of aidc-base).stamp")
    key=$({
        declare -f build_trainer buildah_image archive_pushed
        echo "$ref $base_key"
        hash_files trainer-image/Dockerfile trainer-image/.dockerignore trainer-image/pyproject.toml \
            trainer-image/cpu_install.py trainer-image/aidc_trainer
    } | digest)
    needs_build "$ref" aidc-trainer "$key" || return 0
    begin aidc-trainer "buildah bud trainer-image/Dockerfile (VARIANT=cpu) -> $ref (torch: a few minutes)"
    load_base
    buildah_image aidc-trainer "$ref" "$ROOT/trainer-image" "$ROOT/trainer-image/Dockerfile" \
        --build-arg VARIANT=cpu --build-arg "CPU_BASE=localhost/aidc-base:$SUITE" \
        --build-arg "GPU_BASE=localhost/aidc-base:$SUITE"
    smoke aidc-trainer "$ref" python -m aidc_trainer --help
    prune_build_cache
    archive_pushed aidc-trainer "$ref"
    mark_built aidc-trainer "$key"
}

# pause.c of the pinned Kubernetes module, kept as .cache/images/pause-VERSION.c: copied from the
# user's module cache where it is there, else downloaded into a module cache of its own that goes at
# once (the module's sources take ~0.8 GB, for one file of 1 kB)
pause_source() {
    local kept=$OUT/pause-$KUBERNETES_VERSION.c file=k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c
    local modcache scratch=
    if [[ ! -f $kept ]]; then
        modcache=$(go env GOMODCACHE)
        if [[ ! -f $modcache/$file ]]; then
            say "pause: go mod download k8s.io/kubernetes@$KUBERNETES_VERSION (into a module cache of its own)"
            scratch=$(mktemp -d "${TMPDIR:-/tmp}/aidc-pause.XXXXXX")
            modcache=$scratch
            (cd / && GOMODCACHE=$scratch GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION") >&2
        fi
        cp "$modcache/$file" "$kept.tmp" || die "pause: $modcache/$file not found"
        mv "$kept.tmp" "$kept"
        if [[ -n $scratch ]]; then
            GOMODCACHE=$scratch go clean -modcache
            rm -rf "$scratch"
        fi
    fi
    printf '%s\n' "$kept"
}

build_pause() {
    local ref=registry.k8s.io/pause:$PAUSE_VERSION src key work
    src=$(pause_source)
    key=$({
        declare -f build_pause
        echo "$ref $(gcc --version | head -n 1)"
        sha256sum <"$src"
        hash_files hack/images/oci.py
    } | digest)
    needs_build "$ref" pause "$key" || return 0
    begin pause "gcc -static $src -> $ref"
    work=$(mktemp -d)
    logged pause gcc -static -O2 -Wall -Werror "-DVERSION=v$PAUSE_VERSION" -o "$work/pause" "$src"
    strip "$work/pause"
    # as upstream's image: /pause as uid/gid 65535
    logged pause "${OCI[@]}" files --ref "$ref" --out "$(archive_of pause)" --file "/pause=$work/pause" \
        --entrypoint '["/pause"]' --user 65535:65535
    rm -rf "$work"
    mark_built pause "$key"
}

build_coredns() {
    local ref=localhost/coredns:$COREDNS_VERSION binary=$TOOLS_BIN/coredns key
    # the one image made of a built tool: the other images build while `make tools` runs beside
    # them, and this waits on build-tools.sh's lock until the tools are built (a no-op when they are)
    logged coredns "$ROOT/hack/build-tools.sh" coredns
    key=$({
        declare -f build_coredns
        echo "$ref"
        sha256sum <"$binary"
        hash_files hack/images/oci.py
    } | digest)
    needs_build "$ref" coredns "$key" || return 0
    begin coredns "$binary -> $ref"
    logged coredns "${OCI[@]}" files --ref "$ref" --out "$(archive_of coredns)" --file "/coredns=$binary" \
        --entrypoint '["/coredns"]' --user 65532:65532
    mark_built coredns "$key"
}

# .cache/images/images.json: [{"ref", "archive"}, ...], rewritten only when it changes
write_index() {
    local index=$OUT/images.json
    "$PYTHON" - "$index" "${IMAGES[@]}" <<'EOF'
import json, pathlib, sys

index, pairs = pathlib.Path(sys.argv[1]), sys.argv[2:]
text = json.dumps([{"ref": r, "archive": a} for r, a in zip(pairs[::2], pairs[1::2])], indent=2) + "\n"
if not index.exists() or index.read_text() != text:
    index.write_text(text)
    print(f"images: wrote {index}", file=sys.stderr)
EOF
}

main() {
    local started=$SECONDS step
    [[ $(id -u) == 0 ]] || die "needs root (debootstrap, buildah's storage)"
    mkdir -p "$OUT" "$LOGS" "$BUILDAH_DIR"
    exec 9>"$OUT/.lock"
    flock -n 9 || { say "waiting for another build-images.sh"; flock 9; }
    say "$(free_space)"
    for step in build_base build_operator wait_for_tools_when_short build_trainer build_pause build_coredns; do
        "$step"
    done
    write_index
    prune_build_cache
    if ((BUILT == 0)); then
        say "nothing to do: all $((${#IMAGES[@]} / 2)) images up to date in $OUT"
    else
        say "built $BUILT image(s) in $((SECONDS - started)) s; archives in $OUT, list in $OUT/images.json"
    fi
}

main "$@"
