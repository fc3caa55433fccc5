"""What real nodes change on the machine, written down before each change and undone at ``down``.

A real node is not contained in a folder: the kubelet rewrites sysctls, kube-proxy and the kubelet
add netfilter chains, the bed adds bridges, a route and a forwarding rule, runc makes cgroups, and
containerd and the kubelet mount file systems. Each change is recorded in ``host.json`` in the
bed's state directory *before* it is made, so ``down`` in another process, after a crash, restores
the machine from the journal alone: sysctls to their first recorded value, netfilter tables and
chains that did not exist before removed, links, routes, cgroups, mounts and folders gone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

CGROUP_MOUNTS = Path("/sys/fs/cgroup")
IPTABLES = ("iptables", "ip6tables")
IPTABLES_TABLES = ("filter", "nat", "mangle")


def _quiet(*argv: str) -> int:
    """Run a host command whose output nobody reads; its exit status."""
    return subprocess.run(argv, capture_output=True, check=False).returncode


def run(*argv: str, check: bool = True) -> str:
    """Run a host command; its stdout."""
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class HostJournal:
    """Every change the bed made to the machine, and what was there before."""

    path: Path
    sysctls: dict[str, str] = field(default_factory=dict)
    bridges: list[str] = field(default_factory=list)
    routes: list[list[str]] = field(default_factory=list)
    rules: list[list[str]] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    mount_roots: list[str] = field(default_factory=list)
    absent_paths: list[str] = field(default_factory=list)
    nft_tables: list[str] | None = None
    chains: list[str] | None = None

    @classmethod
    def load(cls, path: Path) -> HostJournal:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        data.pop("path", None)
        return cls(path, **data)

    def save(self) -> None:
        data = asdict(self)
        data.pop("path")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)

    def is_empty(self) -> bool:
        return not (self.sysctls or self.bridges or self.routes or self.rules or self.cgroups or self.mount_roots)


# -- recording, then changing ----------------------------------------------------------------------


def _sysctl_file(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def remember_sysctls(journal: HostJournal, names: tuple[str, ...]) -> None:
    """Record the current values of ``names`` (the first record wins: a restart keeps the original)."""
    for name in names:
        journal.sysctls.setdefault(name, _sysctl_file(name).read_text().strip())
    journal.save()


def set_sysctl(journal: HostJournal, name: str, value: str) -> None:
    remember_sysctls(journal, (name,))
    _sysctl_file(name).write_text(value)


def remember_netfilter(journal: HostJournal) -> None:
    """Record which nftables tables and iptables chains exist before anything of the bed adds any."""
    if journal.nft_tables is None:
        journal.nft_tables = nft_tables()
    if journal.chains is None:
        journal.chains = sorted(iptables_chains())
    journal.save()


def remember_absent(journal: HostJournal, *paths: Path) -> None:
    """Paths that do not exist yet and that a component will create outside the bed's folder."""
    for path in paths:
        if not path.exists() and str(path) not in journal.absent_paths:
            journal.absent_paths.append(str(path))
    journal.save()


def add_mount_root(journal: HostJournal, root: Path) -> None:
    """A folder under which every mount is the bed's (containerd's and the kubelet's folders)."""
    if str(root) not in journal.mount_roots:
        journal.mount_roots.append(str(root))
        journal.save()


def add_bridge(journal: HostJournal, name: str, address: str, prefix: int) -> None:
    if name not in journal.bridges:
        journal.bridges.append(name)
        journal.save()
    if not Path("/sys/class/net", name).exists():
        run("ip", "link", "add", "name", name, "type", "bridge")
    run("ip", "addr", "replace", f"{address}/{prefix}", "dev", name)
    run("ip", "link", "set", name, "up")


def add_route(journal: HostJournal, destination: str, device: str) -> None:
    route = [destination, device]
    if route not in journal.routes:
        journal.routes.append(route)
        journal.save()
    run("ip", "route", "replace", destination, "dev", device)


def add_rule(journal: HostJournal, binary: str, table: str, chain: str, *spec: str) -> None:
    """Insert an iptables rule (once: a rule already there is not added twice)."""
    rule = [binary, table, chain, *spec]
    if rule not in journal.rules:
        journal.rules.append(rule)
        journal.save()
    if subprocess.run([binary, "-t", table, "-C", chain, *spec], capture_output=True, check=False).returncode:
        run(binary, "-t", table, "-I", chain, *spec)


def cgroup_controllers() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the unified one)."""
    return sorted(p for p in CGROUP_MOUNTS.iterdir() if p.is_dir() and not p.is_symlink())


def add_cgroup(journal: HostJournal, parent: str) -> None:
    """Make ``parent`` in every hierarchy (the kubelet wants its cgroup root to exist)."""
    if parent not in journal.cgroups:
        journal.cgroups.append(parent)
        journal.save()
    for controller in cgroup_controllers():
        (controller / parent.lstrip("/")).mkdir(exist_ok=True)


# -- what is there ---------------------------------------------------------------------------------


def nft_tables() -> list[str]:
    """``family name`` of every nftables table."""
    out = run("nft", "list", "tables", check=False)
    return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table "))


def iptables_chains() -> set[str]:
    """``binary table chain`` of every iptables chain (through the nft backend, if that is what runs)."""
    found = set()
    for binary in IPTABLES:
        for table in IPTABLES_TABLES:
            for line in run(f"{binary}-save", "-t", table, check=False).splitlines():
                if line.startswith(":"):
                    found.add(f"{binary} {table} {line[1:].split()[0]}")
    return found


def mounts_under(roots: list[str]) -> list[str]:
    """Mount points under any of ``roots``, deepest first (so children go before their parents)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == root or point.startswith(root.rstrip("/") + "/") for root in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


# -- undoing ---------------------------------------------------------------------------------------


def restore(journal: HostJournal) -> list[str]:
    """Undo everything in the journal, in the reverse order of making it; what could not be undone."""
    problems: list[str] = []
    for step in (_unmount, _remove_rules, _remove_new_chains, _remove_new_tables, _remove_routes, _remove_bridges,
                 _remove_cgroups, _remove_paths, _restore_sysctls):  # fmt: skip
        problems += step(journal)
    if not problems:
        journal.path.unlink(missing_ok=True)
    return problems


def _unmount(journal: HostJournal) -> list[str]:
    problems = []
    for point in mounts_under(journal.mount_roots):
        # busy (a process not yet reaped): detach it, the kernel frees it when the last user goes
        if _quiet("umount", point) and _quiet("umount", "-l", point):
            problems.append(f"cannot unmount {point}")
    return problems


def _remove_rules(journal: HostJournal) -> list[str]:
    for binary, table, chain, *spec in reversed(journal.rules):
        while not _quiet(binary, "-t", table, "-D", chain, *spec):
            pass
    journal.rules.clear()
    return []


def _remove_new_chains(journal: HostJournal) -> list[str]:
    """Chains in tables that existed before (other tables go whole): first the rules that jump to
    them from older chains, then their own rules, then the chains."""
    if journal.chains is None:
        return []
    before = set(journal.chains)
    new = sorted(iptables_chains() - before)
    by_table: dict[tuple[str, str], set[str]] = {}
    for entry in new:
        binary, table, chain = entry.split()
        by_table.setdefault((binary, table), set()).add(chain)
    for (binary, table), chains in by_table.items():
        for line in run(f"{binary}-save", "-t", table, check=False).splitlines():
            parts = line.split()
            if parts[:1] == ["-A"] and parts[1] not in chains and _jumps_to(parts, chains):
                subprocess.run([binary, "-t", table, "-D", *parts[1:]], capture_output=True, check=False)
        for chain in chains:
            subprocess.run([binary, "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in chains:
            subprocess.run([binary, "-t", table, "-X", chain], capture_output=True, check=False)
    left = sorted(iptables_chains() - before)
    return [f"iptables chain left: {entry}" for entry in left]


def _jumps_to(parts: list[str], chains: set[str]) -> bool:
    return any(flag in ("-j", "-g") and target in chains for flag, target in itertools.pairwise(parts))


def _remove_new_tables(journal: HostJournal) -> list[str]:
    if journal.nft_tables is None:
        return []
    for table in sorted(set(nft_tables()) - set(journal.nft_tables)):
        subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True, check=False)
    left = sorted(set(nft_tables()) - set(journal.nft_tables))
    return [f"nftables table left: {table}" for table in left]


def _remove_routes(journal: HostJournal) -> list[str]:
    for destination, device in journal.routes:
        subprocess.run(["ip", "route", "del", destination, "dev", device], capture_output=True, check=False)
    journal.routes.clear()
    return []


def _remove_bridges(journal: HostJournal) -> list[str]:
    problems = []
    for name in journal.bridges:
        if (
            Path("/sys/class/net", name).exists()
            and subprocess.run(["ip", "link", "del", name], capture_output=True, check=False).returncode
        ):
            problems.append(f"cannot delete link {name}")
    if not problems:
        journal.bridges.clear()
    return problems


def _remove_cgroups(journal: HostJournal) -> list[str]:
    problems = []
    for parent in journal.cgroups:
        for controller in cgroup_controllers():
            top = controller / parent.lstrip("/")
            if not top.exists():
                continue
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            try:
                top.rmdir()
            except OSError as error:
                problems.append(f"cannot remove cgroup {top}: {error.strerror}")
    if not problems:
        journal.cgroups.clear()
    return problems


def _remove_paths(journal: HostJournal) -> list[str]:
    problems = []
    for raw in journal.absent_paths:
        path = Path(raw)
        if path.is_dir() and not path.is_symlink():
            if subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False).returncode:
                problems.append(f"cannot remove {path}")
        else:
            path.unlink(missing_ok=True)
    return problems


def _restore_sysctls(journal: HostJournal) -> list[str]:
    problems = []
    for name, value in journal.sysctls.items():
        try:
            _sysctl_file(name).write_text(value)
        except OSError as error:
            problems.append(f"cannot restore {name}={value}: {error.strerror}")
    return problems
