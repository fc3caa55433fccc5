#!/usr/bin/env bash
# Builds the control-plane tools of the test bed from the pinned Go modules in hack/tools/
# into $AIDC_TOOLS (default .cache/tools/bin), one binary per tool, each stamped with its
# version, and copies the CRDs of other projects the tests install (the CSI snapshot API, the
# scheduler-plugins PodGroup, Kueue's CRDs and webhooks) from their pinned modules into
# $AIDC_TOOL_CRDS (default .cache/tools/crds), one folder each. A tool is rebuilt, a folder copied,
# only when its pinned module (go.mod + go.sum) changed, so a second run does nothing.
# Usage: hack/build-tools.sh [tool ... | snapshot-crds | scheduler-plugins-crds | kueue-crds ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools_dir="$root/hack/tools"
# shellcheck source=tools/versions.env
source "$tools_dir/versions.env"
bin=${AIDC_TOOLS:-$root/.cache/tools/bin}
mkdir -p "$bin"
# one build at a time: `make images` (which needs tools) and the test session may start this together.
# The lock is taken only once something must be built, so a caller that finds its tools up to date
# never queues behind someone else's long build; what was waited for is looked at again under it.
locked=0
take_lock() {
  ((locked)) && return
  exec 9>"$bin/.lock"
  flock 9
  locked=1
}
stamp_of() {  # stamp_of "NAME VERSION" MODULE-DIR: what a build from that pinned module is stamped with
  echo "$1 $(cat "$tools_dir/$2/go.mod" "$tools_dir/$2/go.sum" | sha256sum | cut -c1-16)"
}
tool_built() {  # tool_built NAME VERSION MODULE-DIR
  [[ -x "$bin/$1" && -f "$bin/$1.stamp" && "$(cat "$bin/$1.stamp")" == "$(stamp_of "$1 $2" "$3")" ]]
}
crds_copied() {  # crds_copied FOLDER STAMP
  [[ -f "$1/.stamp" && "$(cat "$1/.stamp")" == "$2" ]]
}
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
# Go's build cache (5 GB after the Kubernetes binaries) and module cache (3 GB of sources) are the
# run's own and go when it ends: a binary is rebuilt only when its pin changes, and a fresh machine's
# disk is needed for the venv, the images and the nodes. AIDC_GOCACHE keeps a build cache between runs
# and uses the user's module cache.
if [[ -n ${AIDC_GOCACHE:-} ]]; then
  export GOCACHE=$AIDC_GOCACHE
  own_caches=0
else
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/aidc-go.XXXXXX")
  export GOCACHE=$scratch/build GOMODCACHE=$scratch/mod
  own_caches=1
  trap 'go clean -cache -modcache >/dev/null 2>&1; rm -rf "$scratch"' EXIT
fi
export CGO_ENABLED=0
# Go's parallelism: the linker of kube-apiserver peaks well above 1 GiB per job
export GOMAXPROCS=${GOMAXPROCS:-$(nproc)}

# the version stamp of a Kubernetes build: its compatibility checks read the binary's version from it
kubernetes_ldflags() {
  local version=$1 minor flags="-s -w" pkg
  minor=${version#v1.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}
k8s_ldflags=$(kubernetes_ldflags "$KUBERNETES_VERSION")

# Prometheus 3.x is the Go module v0.3xx.y; only the file, http and kubernetes service discoveries
prom_ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE"
prom_tags=remove_all_sd,enable_kubernetes_sd

# name  module-dir  package  version  ldflags  [build tags]
cni=github.com/containernetworking/plugins/plugins
ctrd=github.com/containerd/containerd/v2
ctrd_ldflags="-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION"
ctrd_tags=no_btrfs,no_devmapper,no_zfs
# stamped with the Kubernetes release it is built from: stamped v0.34.7 (the plugins' version, as
# upstream's Makefile does) it refuses to start, "emulation version 0.34 is not between [1.31, 0.34.0]"
sp_ldflags=$(kubernetes_ldflags "$SCHEDULER_PLUGINS_KUBERNETES_VERSION")
kueue_ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
kueue_ldflags+=" -X sigs.k8s.io/kueue/pkg/version.GitCommit=$KUEUE_VERSION -X sigs.k8s.io/kueue/pkg/version.BuildDate=1970-01-01T00:00:00Z"
specs=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|$KUBERNETES_VERSION|$k8s_ldflags"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|$KUBERNETES_VERSION|$k8s_ldflags"
  "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|$KUBERNETES_VERSION|$k8s_ldflags"
  # a real node (hack/README.md, "Real nodes")
  "kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|$KUBERNETES_VERSION|$k8s_ldflags"
  "kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|$KUBERNETES_VERSION|$k8s_ldflags"
  "etcd|etcd|go.etcd.io/etcd/server/v3|$ETCD_VERSION|-s -w"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|$KWOK_VERSION|-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}"
  "helm|helm|helm.sh/helm/v3/cmd/helm|$HELM_VERSION|-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  "containerd|containerd|$ctrd/cmd/containerd|$CONTAINERD_VERSION|$ctrd_ldflags|$ctrd_tags"
  "containerd-shim-runc-v2|containerd|$ctrd/cmd/containerd-shim-runc-v2|$CONTAINERD_VERSION|$ctrd_ldflags|$ctrd_tags"
  "ctr|containerd|$ctrd/cmd/ctr|$CONTAINERD_VERSION|$ctrd_ldflags|$ctrd_tags"
  "cni-bridge|cni|$cni/main/bridge|$CNI_PLUGINS_VERSION|-s -w"
  "cni-loopback|cni|$cni/main/loopback|$CNI_PLUGINS_VERSION|-s -w"
  "cni-host-local|cni|$cni/ipam/host-local|$CNI_PLUGINS_VERSION|-s -w"
  "cni-portmap|cni|$cni/meta/portmap|$CNI_PLUGINS_VERSION|-s -w"
  "coredns|coredns|github.com/coredns/coredns|$COREDNS_VERSION|-s -w"
  "crictl|cri-tools|sigs.k8s.io/cri-tools/cmd/crictl|$CRICTL_VERSION|-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  # observability: the dashboard's queries and the alerts are proven against a real Prometheus
  "prometheus|prometheus|github.com/prometheus/prometheus/cmd/prometheus|$PROMETHEUS_VERSION|$prom_ldflags|$prom_tags"
  "promtool|prometheus|github.com/prometheus/prometheus/cmd/promtool|$PROMETHEUS_VERSION|$prom_ldflags|$prom_tags"
  # gang scheduling: kube-scheduler 1.34 with scheduler-plugins' Coscheduling (its own Kubernetes release)
  "scheduler-plugins|scheduler-plugins|aidc.io/hack/tools/scheduler-plugins|$SCHEDULER_PLUGINS_VERSION|$sp_ldflags"
  # gang scheduling: Kueue's controller manager (the tests of plain pod groups)
  "kueue|kueue|sigs.k8s.io/kueue/cmd/kueue|$KUEUE_VERSION|$kueue_ldflags"
)

# The run's own caches are emptied when the build moves on to another pinned module (the specs list
# each module's tools together): modules share little but the standard library, and the sum of their
# caches would otherwise sit on a fresh machine's disk beside the venv and the images being built.
last_dir=
next_module() {  # next_module DIR: empty the run's own caches when DIR is not the module built last
  if ((own_caches)) && [[ -n $last_dir && $1 != "$last_dir" ]]; then
    go clean -cache -modcache
  fi
  last_dir=$1
}

wanted=("$@")
built=0
for spec in "${specs[@]}"; do
  IFS='|' read -r name dir pkg version ldflags tags <<<"$spec"
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $name "* ]]; then continue; fi
  tool_built "$name" "$version" "$dir" && continue
  take_lock
  tool_built "$name" "$version" "$dir" && continue  # built by whoever held the lock
  next_module "$dir"
  echo ">> building $name $version" >&2
  start=$(date +%s)
  (cd "$tools_dir/$dir" && go build -tags "${tags:-}" -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  # after the build: -mod=mod may have completed go.sum, and the stamp is of what was built
  stamp_of "$name $version" "$dir" >"$bin/$name.stamp"
  echo ">> built $name in $(($(date +%s) - start))s" >&2
  built=$((built + 1))
done

# CRDs copied from a pinned module's files, nothing built; verified against the module's go.sum
# name  module-dir  module  version  files (globs inside the module, space-separated; copied flat)
crd_root=${AIDC_TOOL_CRDS:-$(dirname "$bin")/crds}
kueue_components=config/components
manifests=(
  "snapshot|snapshot|github.com/kubernetes-csi/external-snapshotter/client/v8|$EXTERNAL_SNAPSHOTTER_VERSION|config/crd/snapshot.storage.k8s.io_*.yaml"
  "scheduler-plugins|scheduler-plugins|sigs.k8s.io/scheduler-plugins|$SCHEDULER_PLUGINS_VERSION|config/crd/bases/scheduling.x-k8s.io_podgroups.yaml"
  # Kueue's CRDs, the kustomization and patches that give some of them a conversion webhook, and its
  # admission webhooks (hack/testbed/aidc_testbed/kueue.py points them at the bed's Kueue)
  "kueue|kueue|sigs.k8s.io/kueue|$KUEUE_VERSION|$kueue_components/crd/bases/*.yaml $kueue_components/crd/kustomization.yaml $kueue_components/crd/patches/webhook_in_*.yaml $kueue_components/webhook/manifests.yaml"
)
for spec in "${manifests[@]}"; do
  IFS='|' read -r name dir module version files <<<"$spec"
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $name-crds "* ]]; then continue; fi
  out="$crd_root/$name"
  stamp=$(stamp_of "$name-crds $version" "$dir")
  crds_copied "$out" "$stamp" && continue
  take_lock
  crds_copied "$out" "$stamp" && continue
  echo ">> copying $name CRDs from $module $version" >&2
  src=$(cd "$tools_dir/$dir" && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [[ -n "$src" && -d "$src" ]] || { echo "could not download $module@$version" >&2; exit 1; }
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  read -ra globs <<<"$files"
  for glob in "${globs[@]}"; do
    # shellcheck disable=SC2086  # a glob inside the module
    cp $src/$glob "$out.tmp/"
  done
  chmod -R u+w "$out.tmp"
  echo "$stamp" >"$out.tmp/.stamp"
  rm -rf "$out" && mv "$out.tmp" "$out"
  built=$((built + 1))
done
((built)) || echo "tools up to date in $bin and $crd_root" >&2
