"""Operator benchmark: TrainingJobs on many fake GPU nodes, against the API server's own limit.

Starts the loopback test bed (``hack/testbed``) with ``--nodes`` kwok nodes of 8 ``nvidia.com/gpu``
each (or reuses one with ``--kubeconfig``), applies ``crds/``, and runs, each in a fresh namespace:

- ``limit``: no operator. A bare client (a thread pool, one connection per thread) creates the very
  pods the operator would create for the burst (rendered by ``aidc.compute.gang.gang_pods`` from
  the same TrainingJobs, created beforehand and not timed): the API server's own pods/s here.
- ``burst``: ``--jobs`` TrainingJobs of ``--ranks`` ranks submitted as fast as a pool of
  ``--submitters`` threads can.
- ``steady``: ``--rate`` jobs/s for ``--seconds`` seconds.
- ``lifecycle``: ``--lifecycle-jobs`` jobs whose ranks exit 0 after a random 5-30 s (the kwok exit
  annotations in ``spec.podTemplate.annotations``), measured to Succeeded.

The operator runs as its own process (``aidc run --standalone``), restarted for each scenario so
its CPU seconds and peak RSS belong to that scenario. Latencies come from watches on pods and
TrainingJobs opened in child processes of the benchmark (so the submitting threads do not delay
them); every process runs on this host, so the watch's receipt time and the submit time share one
clock. The server's own timestamps (creationTimestamp, Ready's lastTransitionTime) have 1 s
resolution; they are printed as a cross-check. API requests per job are the difference of the API
server's ``apiserver_request_total`` (all clients: the benchmark's submits, the scheduler's
bindings, kwok's status writes, the operator) and of the operator's own
``aidc_operator_api_requests_total``. Measures, asserts nothing.

    python benchmarks/operator/bench_operator.py                       # the issue's numbers
    python benchmarks/operator/bench_operator.py --nodes 50 --jobs 100 --seconds 10 --lifecycle-jobs 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack" / "testbed"))

GROUP, VERSION, PLURAL = "aidc.io", "v1alpha1", "trainingjobs"
JOB_LABEL = "aidc.io/job-name"
EXIT_CODE, EXIT_AFTER = "aidc.io/kwok-exit-code", "aidc.io/kwok-exit-after"


# -- a thin HTTP client: the kubeconfig's TLS identity over urllib3, JSON in and out ------------


class Http:
    """One urllib3 pool (``maxsize`` connections) speaking to the API server of a kubeconfig."""

    def __init__(self, kubeconfig: Path, maxsize: int = 8) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
        self.host = cfg.host.rstrip("/")
        self.pool = urllib3.PoolManager(
            maxsize=maxsize,
            block=True,
            cert_reqs=ssl.CERT_REQUIRED,
            ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            retries=False,
        )

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        response = self.pool.request(
            method,
            self.host + path,
            body=data,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=timeout,
        )
        return response.status, response.data

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def stream(self, path: str, timeout: float) -> urllib3.BaseHTTPResponse:
        return self.pool.request(
            "GET", self.host + path, preload_content=False, timeout=urllib3.Timeout(connect=10, read=timeout)
        )


def job_path(namespace: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}" + (f"/{name}" if name else "")


# -- watches in child processes: one JSON line per event, stamped with this host's clock ----------


def _compact(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    record: dict[str, Any] = {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "created": meta.get("creationTimestamp"),
    }
    record["phase"] = status.get("phase")
    if kind == "pods":
        record["job"] = (meta.get("labels") or {}).get(JOB_LABEL)
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        record["ready_at"] = ready.get("lastTransitionTime") if ready and ready.get("status") == "True" else None
        finished = [
            s["state"]["terminated"].get("finishedAt")
            for s in status.get("containerStatuses") or []
            if (s.get("state") or {}).get("terminated")
        ]
        record["finished_at"] = max((f for f in finished if f), default=None)
        record["deleting"] = bool(meta.get("deletionTimestamp"))
    else:
        done = next((c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), None)
        record["succeeded_at"] = done.get("lastTransitionTime") if done and done.get("status") == "True" else None
    return record


def _watch(kubeconfig: str, namespace: str, kind: str, out: str) -> None:
    """Child process: watch ``kind`` in ``namespace`` from now on, appending events to ``out``."""
    http = Http(Path(kubeconfig), maxsize=1)
    base = f"/api/v1/namespaces/{namespace}/pods" if kind == "pods" else job_path(namespace)
    selector = f"&labelSelector={JOB_LABEL}" if kind == "pods" else ""
    version = http.json("GET", f"{base}?limit=1{selector}")["metadata"]["resourceVersion"]
    with open(out, "a", buffering=1) as sink:
        sink.write(json.dumps({"t": time.time(), "type": "READY"}) + "\n")
        while True:
            query = f"?watch=1&allowWatchBookmarks=true&timeoutSeconds=120&resourceVersion={version}{selector}"
            response = http.stream(base + query, timeout=150)
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                now = time.time()
                for line in lines:
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":  # 410 Gone: start again from a fresh list
                        version = http.json("GET", f"{base}?limit=1{selector}")["metadata"]["resourceVersion"]
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        sink.write(json.dumps({"t": now, "type": event["type"], **_compact(kind, obj)}) + "\n")
            response.release_conn()


class Watch:
    """A watch process and an incremental reader of what it wrote."""

    def __init__(self, kubeconfig: Path, namespace: str, kind: str, workdir: Path) -> None:
        self.path = workdir / f"watch-{namespace}-{kind}.jsonl"
        self.path.write_text("")
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=_watch, args=(str(kubeconfig), namespace, kind, str(self.path)), daemon=True
        )
        self.process.start()
        self._file = self.path.open()
        self._partial = ""
        deadline = time.monotonic() + 30
        while not any(e["type"] == "READY" for e in self.read()):
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError(f"the {kind} watch did not start")
            time.sleep(0.05)

    def read(self) -> list[dict[str, Any]]:
        text = self._partial + self._file.read()
        *lines, self._partial = text.split("\n")
        return [json.loads(line) for line in lines if line]

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)
        self._file.close()


# -- what the watches saw ---------------------------------------------------------------------


def server_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class JobTrack:
    submitted: float = 0.0  # local clock, just before the create call
    created_server: float | None = None
    succeeded: float | None = None  # local receipt of phase Succeeded
    succeeded_server: float | None = None
    phases: list[str] = field(default_factory=list)


@dataclass
class PodTrack:
    job: str
    uids: set[str] = field(default_factory=set)
    added: float | None = None
    running: float | None = None
    ended: float | None = None
    created_server: float | None = None
    ready_server: float | None = None
    finished_server: float | None = None


class Tracker:
    """Folds the watch events into per-job and per-pod times."""

    def __init__(self, pod_watch: Watch, job_watch: Watch) -> None:
        self.pod_watch, self.job_watch = pod_watch, job_watch
        self.jobs: dict[str, JobTrack] = defaultdict(JobTrack)
        self.pods: dict[str, PodTrack] = {}
        self.pods_of: dict[str, set[str]] = defaultdict(set)
        self.pod_events = 0

    def update(self) -> None:
        for e in self.pod_watch.read():
            if e["type"] not in ("ADDED", "MODIFIED") or not e.get("job"):
                continue
            self.pod_events += 1
            pod = self.pods.get(e["name"])
            if pod is None:
                pod = self.pods[e["name"]] = PodTrack(job=e["job"], added=e["t"])
                self.pods_of[e["job"]].add(e["name"])
            pod.uids.add(e["uid"])
            pod.created_server = pod.created_server or server_time(e["created"])
            if e["phase"] == "Running" and pod.running is None:
                pod.running = e["t"]
            pod.ready_server = pod.ready_server or server_time(e.get("ready_at"))
            if e["phase"] in ("Succeeded", "Failed") and pod.ended is None:
                pod.ended = e["t"]
                pod.finished_server = server_time(e.get("finished_at"))
        for e in self.job_watch.read():
            if e["type"] not in ("ADDED", "MODIFIED"):
                continue
            job = self.jobs[e["name"]]
            job.created_server = job.created_server or server_time(e["created"])
            if e["phase"] and (not job.phases or job.phases[-1] != e["phase"]):
                job.phases.append(e["phase"])
            if e["phase"] == "Succeeded" and job.succeeded is None:
                job.succeeded = e["t"]
                job.succeeded_server = server_time(e.get("succeeded_at"))

    def ranks(self, job: str) -> list[PodTrack]:
        return [self.pods[n] for n in self.pods_of.get(job, ())]

    def all_created(self, job: str, ranks: int) -> float | None:
        pods = self.ranks(job)
        return max(p.added for p in pods if p.added) if len(pods) >= ranks else None

    def all_running(self, job: str, ranks: int) -> float | None:
        pods = self.ranks(job)
        if len(pods) < ranks or any(p.running is None for p in pods):
            return None
        return max(p.running for p in pods if p.running)

    def last_exit(self, job: str) -> float | None:
        pods = self.ranks(job)
        return max((p.ended for p in pods if p.ended), default=None) if pods and all(p.ended for p in pods) else None


# -- the API server's and the operator's counters -----------------------------------------------

_SAMPLE = re.compile(r"^(\w+)\{(.*)\}\s+([0-9.eE+-]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_counters(text: str, metric: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    counts: dict[tuple[str, ...], float] = defaultdict(float)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != metric:
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        counts[tuple(labels.get(k, "") for k in keys)] += float(match.group(3))
    return counts


def apiserver_requests(http: Http) -> dict[tuple[str, ...], float]:
    status, data = http.request("GET", "/metrics")
    if status != 200:
        return {}
    return parse_counters(data.decode(), "apiserver_request_total", ("verb", "resource", "subresource"))


def operator_metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def operator_requests(port: int) -> dict[tuple[str, ...], float]:
    return parse_counters(operator_metrics(port), "aidc_operator_api_requests_total", ("verb", "resource"))


def operator_outcomes(port: int) -> str:
    """Gang restarts by reason, and the overdue pods the operator checked with the API server."""
    text = operator_metrics(port)
    restarts = parse_counters(text, "aidc_operator_trainingjob_restarts_total", ("reason",))
    overdue = parse_counters(text, "aidc_operator_overdue_pods_total", ("outcome",))
    by_reason = ", ".join(f"{k[0]} {v:.0f}" for k, v in sorted(restarts.items()) if v) or "none"
    checked = ", ".join(f"{k[0]} {v:.0f}" for k, v in sorted(overdue.items()) if v) or "none"
    return f"gang restarts: {by_reason}; overdue pods checked with the API server: {checked}"


def operator_passes(port: int) -> float:
    """Reconcile passes of TrainingJobs so far."""
    counts = parse_counters(operator_metrics(port), "aidc_operator_reconcile_duration_seconds_count", ("kind",))
    return counts.get(("TrainingJob",), 0.0)


def difference(
    after: dict[tuple[str, ...], float], before: dict[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


PROCESS_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "operator",
    "bench",
    "bench watches",
)
WRITES = {"CREATE", "UPDATE", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "POST", "PUT"}
# verbs of the operator's own aidc_operator_api_requests_total that write
OPERATOR_WRITES = {"create", "patch", "apply", "delete"}


# -- the operator as its own process -------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of named groups of processes from its creation to ``stop`` (one gone reads 0)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, pids in self.groups.items():
            for pid in pids:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    seconds[name] = seconds.get(name, 0.0) + process_cpu_seconds(pid)
        return seconds

    def stop(self) -> dict[str, float]:
        return {name: max(0.0, t - self._before.get(name, t)) for name, t in self._read().items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """``aidc run --standalone`` with KUBECONFIG; its peak RSS from /proc (CPU seconds: ``CpuMeter``)."""

    def __init__(self, kubeconfig: Path, log: Path, env: dict[str, str], profile: Path | None = None) -> None:
        self.metrics_port = free_port()
        environment = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "AIDC_METRICS_PORT": str(self.metrics_port),
            "AIDC_HEALTH_PORT": str(free_port()),
            "AIDC_TRAINER_IMAGE": "aidc/trainer:bench",
            **env,
        }
        argv = [str(REPO / ".venv/bin/aidc"), "run", "--standalone"]
        if profile is not None:
            argv = [
                str(REPO / ".venv/bin/py-spy"),
                "record",
                "--nonblocking",
                "--gil",  # only samples holding the GIL: where the Python CPU goes, not who waits
                "-r",
                "50",
                "-o",
                str(profile),
                "-f",
                {".json": "speedscope", ".txt": "raw"}.get(profile.suffix, "flamegraph"),
                "--",
                *argv,
            ]
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            argv, env=environment, stdout=self._log, stderr=self._log, start_new_session=True
        )
        self.pid = self.process.pid
        self.peak_rss = 0
        self._sampling = True
        deadline = time.monotonic() + 60
        while not operator_requests(self.metrics_port) and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}; see {log}")
            time.sleep(0.2)
        if profile is not None:  # py-spy's child is the operator
            with contextlib.suppress(Exception):
                self.pid = int(
                    Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()[0]
                )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while self._sampling:
            with contextlib.suppress(OSError, ValueError):
                self.peak_rss = max(self.peak_rss, self.rss_mib())
            time.sleep(0.25)

    def stop(self) -> None:
        self._sampling = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT if self.pid != self.process.pid else signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()


# -- load, percentiles, table ---------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average at the start and its maximum while a scenario runs."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]
        self.peak = self.start
        self._on = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self._on:
            self.peak = max(self.peak, os.getloadavg()[0])
            time.sleep(1)

    def stop(self) -> str:
        self._on = False
        return f"{self.start:.1f}->{self.peak:.1f}"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def pct3(values: list[float]) -> str:
    if not values:
        return "-"
    return "/".join(f"{percentile(values, q):.2f}" for q in (50, 95, 99))


@dataclass
class Row:
    scenario: str
    jobs: int
    pods: int
    seconds: float  # first submit -> last job's pods all created
    created: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    created_server: list[float] = field(default_factory=list)
    running_server: list[float] = field(default_factory=list)
    done_server: list[float] = field(default_factory=list)
    operator_requests: dict[tuple[str, ...], float] = field(default_factory=dict)
    apiserver: dict[tuple[str, ...], float] = field(default_factory=dict)
    cpu: float | None = None
    rss: float | None = None
    load: str = ""
    complete: str = ""
    # CPU seconds of every process on the machine that takes part, while the scenario ran
    process_cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def pods_per_second(self) -> float:
        return self.pods / self.seconds if self.seconds else 0.0


def print_table(rows: list[Row], limit: float | None) -> None:
    header = (
        "| scenario | jobs | pods | submit→pods created p50/p95/p99 s | submit→all Running p50/p95/p99 s "
        "| last exit→Succeeded p50/p95/p99 s | jobs/s | pods/s | of limit | operator writes/job "
        "| operator CPU s | peak RSS MiB | load 1m | complete |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        writes = sum(v for k, v in r.operator_requests.items() if k[0] in OPERATOR_WRITES)
        ratio = f"{r.pods_per_second / limit:.2f}" if limit and r.scenario not in ("limit",) else "-"
        print(
            f"| {r.scenario} | {r.jobs} | {r.pods} | {pct3(r.created)} | {pct3(r.running)} | {pct3(r.done)} "
            f"| {r.jobs / r.seconds if r.seconds else 0:.1f} | {r.pods_per_second:.0f} | {ratio} "
            f"| {writes / r.jobs if r.jobs and r.cpu is not None else 0:.1f} "
            f"| {'-' if r.cpu is None else f'{r.cpu:.1f}'} | {'-' if r.rss is None else f'{r.rss:.0f}'} "
            f"| {r.load} | {r.complete} |"
        )
    print()
    print("Server clock (1 s resolution): creationTimestamp / Ready / Succeeded of the same objects")
    print("| scenario | created p50/p95/p99 s | Running p50/p95/p99 s | exit→Succeeded p50/p95/p99 s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.scenario} | {pct3(r.created_server)} | {pct3(r.running_server)} | {pct3(r.done_server)} |")
    print()
    names = [n for n in PROCESS_ORDER if any(n in r.process_cpu for r in rows)]
    if names:
        print(
            "CPU seconds by process, from the first submit until every job's ranks were seen Running "
            "(lifecycle: Succeeded; limit: until its last create returned), and per 1,000 pods"
        )
        print("| scenario | " + " | ".join(names) + " | all | all per 1,000 pods |")
        print("|" + "---|" * (len(names) + 3))
        for r in rows:
            total = sum(r.process_cpu.values())
            cells = " | ".join(f"{r.process_cpu[n]:.1f}" if n in r.process_cpu else "-" for n in names)
            print(f"| {r.scenario} | {cells} | {total:.1f} | {1000 * total / r.pods if r.pods else 0:.1f} |")
        print()
    print(
        "Requests per job: the operator's own (verb resource; the lists are its checks of overdue pods), "
        "and the API server's writes from every client"
    )
    for r in rows:
        if not r.jobs:
            print(f"- {r.scenario}: " + "; ".join(r.notes))
            continue
        own = ", ".join(f"{k[0]} {k[1]} {v / r.jobs:.2f}" for k, v in sorted(r.operator_requests.items()))
        server = ", ".join(
            f"{k[0]} {k[1]}{'/' + k[2] if k[2] else ''} {v / r.jobs:.2f}"
            for k, v in sorted(r.apiserver.items())
            if k[0] in WRITES
        )
        print(f"- {r.scenario}: operator [{own or '-'}]; API server [{server}]")
        for note in r.notes:
            print(f"  {note}")


# -- the scenarios --------------------------------------------------------------------------------


def training_job(name: str, ranks: int, gpus: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": ranks, "trainer": {"task": "classifier"}, "resources": {"gpus": gpus}}
    if annotations:
        spec["podTemplate"] = {"annotations": annotations}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}


class Bench:
    def __init__(
        self, args: argparse.Namespace, kubeconfig: Path, workdir: Path, control_plane: dict[str, int]
    ) -> None:
        self.args, self.kubeconfig, self.workdir = args, kubeconfig, workdir
        self.control_plane = control_plane
        self.http = Http(kubeconfig, maxsize=max(args.submitters, args.limit_threads) + 4)
        self.limit: float | None = None
        self.rows: list[Row] = []
        self.operator_env = dict(e.split("=", 1) for e in args.operator_env)

    # namespaces
    def namespace(self, scenario: str) -> str:
        name = f"bench-{scenario}-{int(time.time()) % 100000}"
        self.http.json("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str) -> float:
        started = time.monotonic()
        self.http.request("DELETE", f"/api/v1/namespaces/{name}")
        while self.http.request("GET", f"/api/v1/namespaces/{name}")[0] != 404:
            if time.monotonic() - started > self.args.cleanup_timeout:
                print(f"warning: namespace {name} still there after {self.args.cleanup_timeout} s", file=sys.stderr)
                break
            time.sleep(1)
        return time.monotonic() - started

    def submit(
        self, namespace: str, bodies: list[dict[str, Any]], tracker: Tracker | None, rate: float | None
    ) -> float:
        """Creates the TrainingJobs (as fast as possible, or at ``rate`` per second); returns the first submit."""
        first = time.time()

        def one(body: dict[str, Any]) -> None:
            if tracker is not None:
                tracker.jobs[body["metadata"]["name"]].submitted = time.time()
            status, data = self.http.request("POST", job_path(namespace), body)
            if status >= 300:
                raise RuntimeError(f"creating {body['metadata']['name']}: {status} {data[:200]!r}")

        with ThreadPoolExecutor(self.args.submitters) as pool:
            futures = []
            for i, body in enumerate(bodies):
                if rate:
                    delay = first + i / rate - time.time()
                    if delay > 0:
                        time.sleep(delay)
                futures.append(pool.submit(one, body))
            for future in futures:
                future.result()
        return first

    def wait(
        self, tracker: Tracker, names: list[str], ranks: int, until: Callable[[str], float | None], timeout: float
    ) -> int:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            time.sleep(0.5)
            tracker.update()
            pending = [n for n in pending if until(n) is None]
        return len(names) - len(pending)

    def scenario(self, label: str, jobs: int, rate: float | None, lifecycle: bool) -> Row:
        args = self.args
        namespace = self.namespace(label)
        pod_watch = Watch(self.kubeconfig, namespace, "pods", self.workdir)
        job_watch = Watch(self.kubeconfig, namespace, "trainingjobs", self.workdir)
        tracker = Tracker(pod_watch, job_watch)
        profile = self.workdir / f"profile-{label}.{args.profile}" if args.profile else None
        operator = Operator(self.kubeconfig, self.workdir / f"operator-{label}.log", self.operator_env, profile)
        load = LoadSampler()
        random.seed(7)
        bodies = []
        for i in range(jobs):
            annotations = {EXIT_CODE: "0", EXIT_AFTER: f"{random.randint(5, 30)}s"} if lifecycle else None
            bodies.append(training_job(f"{label}-{i:04d}", args.ranks, args.gpus_per_rank, annotations))
        names = [b["metadata"]["name"] for b in bodies]
        api_before, op_before = apiserver_requests(self.http), operator_requests(operator.metrics_port)
        meter = self.cpu_meter(operator.pid, pod_watch, job_watch)
        passes_before = operator_passes(operator.metrics_port)
        first = self.submit(namespace, bodies, tracker, rate)
        timeout = args.timeout + (jobs / rate if rate else 0)
        created = self.wait(tracker, names, args.ranks, lambda n: tracker.all_created(n, args.ranks), timeout)
        running = self.wait(
            tracker,
            names,
            args.ranks,
            lambda n: tracker.all_running(n, args.ranks) or (tracker.jobs[n].succeeded if lifecycle else None),
            timeout,
        )
        op_requests = difference(operator_requests(operator.metrics_port), op_before)
        api = difference(apiserver_requests(self.http), api_before)
        done = 0
        if lifecycle:
            done = self.wait(tracker, names, args.ranks, lambda n: tracker.jobs[n].succeeded, timeout + 40)
            op_requests = difference(operator_requests(operator.metrics_port), op_before)
            api = difference(apiserver_requests(self.http), api_before)
        process_cpu = meter.stop()
        passes = operator_passes(operator.metrics_port) - passes_before
        tracker.update()
        row = Row(label, jobs, jobs * args.ranks, 0.0, load=load.stop())
        last_created = [tracker.all_created(n, args.ranks) for n in names]
        row.seconds = max((t for t in last_created if t), default=first) - first
        for name in names:
            job = tracker.jobs[name]
            c, r = tracker.all_created(name, args.ranks), tracker.all_running(name, args.ranks)
            pods = tracker.ranks(name)
            if c:
                row.created.append(c - job.submitted)
            if r:
                row.running.append(r - job.submitted)
            if job.created_server and len(pods) >= args.ranks:
                row.created_server.append(max(p.created_server or 0 for p in pods) - job.created_server)
                if all(p.ready_server for p in pods):
                    row.running_server.append(max(p.ready_server or 0 for p in pods) - job.created_server)
            exit_at = tracker.last_exit(name)
            if lifecycle and exit_at and job.succeeded:
                row.done.append(job.succeeded - exit_at)
                finished = [p.finished_server for p in pods if p.finished_server]
                if finished and job.succeeded_server:
                    row.done_server.append(job.succeeded_server - max(finished))
        replaced = sum(1 for p in tracker.pods.values() if len(p.uids) > 1)
        extra = sum(1 for n in names if len(tracker.pods_of.get(n, ())) != args.ranks)
        row.complete = f"{created}/{running}" + (f"/{done}" if lifecycle else "") + f" of {jobs}"
        if replaced or extra:
            row.notes.append(
                f"{replaced} pod names with more than one uid, {extra} jobs without exactly {args.ranks} pods"
            )
        row.operator_requests, row.apiserver = op_requests, api
        row.cpu, row.rss, row.process_cpu = process_cpu.get("operator"), operator.peak_rss, process_cpu
        row.notes.append(
            f"{tracker.pod_events} pod events watched; {passes / jobs:.1f} reconcile passes per job; "
            f"operator log {operator_log(self.workdir, label)}"
        )
        row.notes.append(operator_outcomes(operator.metrics_port))
        operator.stop()
        pod_watch.stop()
        job_watch.stop()
        row.notes.append(f"namespace deleted in {self.delete_namespace(namespace):.0f} s")
        return row

    def cpu_meter(self, operator: int | None, *watches: Watch) -> CpuMeter:
        """A started meter of the control plane, the operator (if any), this process and its watches."""
        groups = {name: [pid] for name, pid in self.control_plane.items()}
        groups["bench"] = [os.getpid()]
        groups["bench watches"] = [w.process.pid for w in watches if w.process.pid]
        if operator is not None:
            groups["operator"] = [operator]
        return CpuMeter(groups)

    def bare_client(self) -> Row:
        """The API server's own limit: the burst's pods from a bare client, no operator running."""
        from aidc.api import TrainingJob
        from aidc.compute.gang import gang_pods
        from aidc.compute.trainer_account import trainer_identity
        from aidc.settings import OperatorSettings

        args = self.args
        namespace = self.namespace("limit")
        for obj in trainer_identity(namespace):
            group = "api/v1" if obj["apiVersion"] == "v1" else f"apis/{obj['apiVersion']}"
            plural = obj["kind"].lower() + "s"
            self.http.json("POST", f"/{group}/namespaces/{namespace}/{plural}", obj)
        settings = OperatorSettings(trainer_image="aidc/trainer:bench")
        pods: list[dict[str, Any]] = []
        with ThreadPoolExecutor(args.submitters) as pool:  # the owners, untimed: same pods, same owner references
            created = list(
                pool.map(
                    lambda i: self.http.json(
                        "POST", job_path(namespace), training_job(f"limit-{i:04d}", args.ranks, args.gpus_per_rank)
                    ),
                    range(args.jobs),
                )
            )
        for body in created:
            pods.extend(gang_pods(TrainingJob.model_validate(body), 0, settings))
        pod_watch = Watch(self.kubeconfig, namespace, "pods", self.workdir)
        load = LoadSampler()
        api_before = apiserver_requests(self.http)
        meter = self.cpu_meter(None, pod_watch)
        path = f"/api/v1/namespaces/{namespace}/pods"

        def one(pod: dict[str, Any]) -> float:
            started = time.time()
            status, data = self.http.request("POST", path, pod)
            if status >= 300:
                raise RuntimeError(f"creating pod {pod['metadata']['name']}: {status} {data[:200]!r}")
            return time.time() - started

        started = time.time()
        with ThreadPoolExecutor(args.limit_threads) as pool:
            latencies = list(pool.map(one, pods))
        seconds = time.time() - started
        row = Row("limit", 0, len(pods), seconds, process_cpu=meter.stop())
        tracker = Tracker(pod_watch, pod_watch)
        # Running: every pod observed Running (scheduler and kwok are the same as in the scenarios)
        deadline = time.monotonic() + args.limit_running_timeout
        while time.monotonic() < deadline:
            for e in pod_watch.read():
                if e["type"] in ("ADDED", "MODIFIED") and e.get("job"):
                    pod = tracker.pods.setdefault(e["name"], PodTrack(job=e["job"], added=e["t"]))
                    if e["phase"] == "Running" and pod.running is None:
                        pod.running = e["t"]
            if sum(1 for p in tracker.pods.values() if p.running) >= len(pods):
                break
            time.sleep(0.5)
        ran = [p.running for p in tracker.pods.values() if p.running]
        row.apiserver = difference(apiserver_requests(self.http), api_before)
        row.load = load.stop()
        row.complete = f"{len(pods) - sum(1 for x in latencies if x < 0)} created, {len(ran)} seen Running"
        row.notes.append(
            f"{len(pods)} pods by {args.limit_threads} threads in {seconds:.1f} s = {len(pods) / seconds:.0f} pods/s; "
            f"create call p50/p99 {percentile(latencies, 50):.3f}/{percentile(latencies, 99):.3f} s; "
            + (
                f"all Running {max(ran, default=started) - started:.1f} s after the first create"
                if len(ran) >= len(pods)
                else f"{len(ran)} seen Running (waited {args.limit_running_timeout:.0f} s)"
            )
        )
        pod_watch.stop()
        row.notes.append(f"namespace deleted in {self.delete_namespace(namespace):.0f} s")
        self.limit = row.pods_per_second
        return row

    def run(self) -> None:
        for scenario in self.args.scenarios:
            print(f"-- {scenario} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            if scenario == "limit":
                self.rows.append(self.bare_client())
            elif scenario == "burst":
                self.rows.append(self.scenario("burst", self.args.jobs, None, False))
            elif scenario == "steady":
                self.rows.append(
                    self.scenario("steady", round(self.args.rate * self.args.seconds), self.args.rate, False)
                )
            elif scenario == "lifecycle":
                self.rows.append(self.scenario("lifecycle", self.args.lifecycle_jobs, None, True))
            print(f"   done: {self.rows[-1].complete}", file=sys.stderr, flush=True)


def operator_log(workdir: Path, label: str) -> Path:
    return workdir / f"operator-{label}.log"


def machine() -> str:
    memory = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} cores, {memory / 1024 / 1024:.0f} GiB memory"


def git_commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], check=False, cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "operator", "benchmarks")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")


@contextlib.contextmanager
def test_bed(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    """The kubeconfig, and the pid of each control-plane process (none for a bed not started here)."""
    if args.kubeconfig:
        yield Path(args.kubeconfig), {}
        return
    from aidc_testbed import Testbed, TestbedConfig

    started = time.monotonic()
    # A loaded 2-core machine delays kwok's node heartbeats; with the bed's 5 s toleration a node
    # marked NotReady for a moment has its pods evicted, which is not what is measured here.
    config = TestbedConfig(
        state_dir=workdir / "bed",
        nodes=args.nodes,
        volumes=0,
        die_with_parent=True,
        start_timeout_seconds=600,
        eviction_toleration_seconds=3600,
    )
    with Testbed(config) as bed:
        print(f"test bed with {args.nodes} nodes up in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        state = bed.state
        yield bed.kubeconfig, {p.name: p.pid for p in (state.processes if state else [])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500, help="kwok nodes of 8 GPUs (default 500)")
    parser.add_argument("--jobs", type=int, default=1000, help="TrainingJobs in the burst (and the limit's pods)")
    parser.add_argument("--ranks", type=int, default=8, help="ranks (pods) per job")
    parser.add_argument(
        "--gpus-per-rank",
        type=int,
        default=0,
        help="GPUs per rank (0: 8,000 ranks do not fit on 4,000 GPUs, so they ask for none)",
    )
    parser.add_argument("--rate", type=float, default=10, help="jobs/s of the steady scenario")
    parser.add_argument("--seconds", type=float, default=60, help="length of the steady scenario")
    parser.add_argument("--lifecycle-jobs", type=int, default=200)
    parser.add_argument("--submitters", type=int, default=32, help="threads submitting TrainingJobs")
    parser.add_argument("--limit-threads", type=int, default=64, help="threads of the bare client")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["limit", "burst", "steady", "lifecycle"],
        choices=["limit", "burst", "steady", "lifecycle"],
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for a scenario's jobs")
    parser.add_argument(
        "--limit-running-timeout",
        type=float,
        default=0,
        help="seconds the limit scenario waits for its pods to run (scheduler and kwok, not the "
        "API server, set that pace: about 25 pods/s on 2 cores)",
    )
    parser.add_argument("--cleanup-timeout", type=float, default=900)
    parser.add_argument("--kubeconfig", help="use a running test bed instead of starting one")
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the operator (repeatable)",
    )
    parser.add_argument(
        "--profile",
        choices=["svg", "json", "txt"],
        help="run the operator under py-spy (pip install py-spy): flame graph, speedscope or collapsed stacks",
    )
    parser.add_argument("--workdir", type=Path, help="logs, watch files, profiles (default: a temporary folder)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aidc-bench-operator-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir {workdir}", file=sys.stderr)
    started = time.time()
    commit = git_commit()  # now: a run takes long enough for the checkout to move on meanwhile
    with test_bed(args, workdir) as (kubeconfig, control_plane):
        subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "--server-side", "-f", str(REPO / "crds")],
            check=True,
            capture_output=True,
        )
        for _attempt in range(3):  # a wait right after the apply can find no CRD yet (once seen)
            waited = subprocess.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    str(kubeconfig),
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    "crd/trainingjobs.aidc.io",
                    "crd/inferenceservices.aidc.io",
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            if waited.returncode == 0:
                break
            print(f"waiting for the CRDs: {waited.stderr.strip()}", file=sys.stderr)
            time.sleep(2)
        else:
            raise SystemExit("the CRDs never became Established")
        bench = Bench(args, kubeconfig, workdir, control_plane)
        try:
            bench.run()
        finally:
            print()
            print(
                f"aidc operator benchmark: commit {commit} at the start; {machine()}; "
                f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
                f"{time.time() - started:.0f} s in all"
            )
            print(f"command: {' '.join(sys.argv)}")
            print(
                f"{args.nodes if not args.kubeconfig else 'existing'} nodes; jobs of {args.ranks} ranks, "
                f"{args.gpus_per_rank} GPUs per rank; submitters {args.submitters}, "
                f"bare client threads {args.limit_threads}"
            )
            print()
            print_table(bench.rows, bench.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
