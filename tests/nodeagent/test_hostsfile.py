"""Each pod's /etc/hosts: the rendezvous names a cluster DNS would answer, resolvable by the C library."""

from __future__ import annotations

import os
from pathlib import Path

from aidc_nodeagent.hostsfile import HostEntry, render, write_in_place

RANK0 = HostEntry("10.244.7.2", "digits-0", "digits", "team")
RANK1 = HostEntry("10.244.7.3", "digits-1", "digits", "team")
OTHER = HostEntry("10.244.7.9", "digits-0", "digits", "elsewhere")
LONE = HostEntry("10.244.7.4", "web-abc", None, "team")


def lines_for(text: str, address: str) -> list[str]:
    return next(line.split("\t") for line in text.splitlines() if line.startswith(address + "\t"))


def test_a_rank_finds_rank_0_by_the_headless_service_name() -> None:
    text = render(RANK1, [RANK0, RANK1, OTHER, LONE], {"10.96.0.1": "kubernetes kubernetes.default.svc"})
    rank0 = lines_for(text, "10.244.7.2")
    assert "digits-0.digits.team.svc" in rank0 and "digits-0.digits.team.svc.cluster.local" in rank0
    assert "digits-0.digits" in rank0  # same namespace: the short form works too
    elsewhere = lines_for(text, "10.244.7.9")
    assert "digits-0.digits" not in elsewhere  # another namespace's digits-0 only by its full name
    assert "10.244.7.4" not in text  # no subdomain, no DNS name
    assert "10.96.0.1\tkubernetes kubernetes.default.svc" in text


def test_the_pod_resolves_its_own_hostname_and_rendezvous_name_to_its_own_address() -> None:
    own = lines_for(render(RANK0, [RANK0, RANK1], {}), "10.244.7.2")
    # gloo binds to the address the hostname resolves to; rank 0 also resolves MASTER_ADDR = itself
    assert own[-1] == "digits-0" and "digits-0.digits.team.svc" in own
    assert render(RANK0, [RANK0, RANK1], {}).count("10.244.7.2") == 1


def test_rewriting_keeps_the_inode_a_bind_mount_pins(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    write_in_place(hosts, "a long first version of the file\n")
    inode = os.stat(hosts).st_ino
    write_in_place(hosts, "short\n")
    assert hosts.read_text() == "short\n" and os.stat(hosts).st_ino == inode
