#!/usr/bin/env bash
# Installs the Debian packages that real nodes and image builds need, when they are missing, so
# `make demo` and `make test` work on a fresh machine. Usage: hack/host-packages.sh
#   runc                  the OCI runtime containerd's shim runs (Debian's 1.1.5 works with containerd 2.4)
#   iptables, nftables    kube-proxy's Service rules, the kubelet's canary chains, the bed's forwarding rule
#   conntrack             kube-proxy clears stale UDP entries (DNS) with it
#   iproute2              the bed's bridges and routes
#   buildah, debootstrap  the images: a Debian base bootstrapped from packages, Dockerfiles built on it
set -euo pipefail
declare -A command_of=(
  [runc]=runc [iptables]=iptables [nftables]=nft [conntrack]=conntrack [iproute2]=ip
  [buildah]=buildah [debootstrap]=debootstrap
)
missing=()
for package in "${!command_of[@]}"; do
  if ! command -v "${command_of[$package]}" >/dev/null 2>&1 && ! [[ -x "/usr/sbin/${command_of[$package]}" || -x "/bin/${command_of[$package]}" ]]; then
    missing+=("$package")
  fi
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo ">> installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
