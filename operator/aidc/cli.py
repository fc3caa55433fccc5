"""The ``aidc`` command: generate the CRDs, or run the operator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aidc.settings import OperatorSettings

REPO_CRD_DIRS = (Path("crds"), Path("charts/aidc-operator/crds"))
API_REFERENCE = Path("docs/api-reference.md")


def _crds(args: argparse.Namespace) -> int:
    from aidc.crdgen.definitions import dump, render_crds, write_crds
    from aidc.crdgen.reference import render_reference

    directories = [Path(d) for d in args.out] if args.out else list(REPO_CRD_DIRS)
    reference = None if args.out else API_REFERENCE
    if not args.check:
        for path in write_crds(*directories):
            print(f"wrote {path}")
        if reference is not None:
            reference.parent.mkdir(parents=True, exist_ok=True)
            reference.write_text(render_reference())
            print(f"wrote {reference}")
        return 0
    expected = {directory / name: dump(crd) for directory in directories for name, crd in render_crds().items()}
    if reference is not None:
        expected[reference] = render_reference()
    stale = [path for path, text in expected.items() if not path.is_file() or path.read_text() != text]
    for path in stale:
        print(f"{path} differs from the models; run `make crds`", file=sys.stderr)
    return 1 if stale else 0


def _tune_garbage_collection() -> None:
    """Make Python's cyclic garbage collector cheap for a process that holds a fleet in memory.

    Objects that exist at start-up live as long as the process, so they are frozen out of every
    collection, and the youngest generation is collected every 50,000 allocations instead of 700:
    a watch event alone allocates a few hundred objects, and cyclic garbage is rare here
    (docs/adr/0001-operator-hot-paths.md has the measurement).
    """
    import gc

    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(50_000, middle, oldest)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import dataclasses

    from aidc.runtime import handlers, logs  # noqa: F401  (registers the handlers; imported before the gc freeze)
    from aidc.settings import OperatorSettings

    settings = OperatorSettings.from_env()
    if args.leader_election is not None:
        settings = dataclasses.replace(settings, leader_election=args.leader_election)
    logs.configure(args.log_format, args.verbose)
    _tune_garbage_collection()
    with contextlib.suppress(asyncio.CancelledError):  # what kopf.run does too
        asyncio.run(_operate(args, settings))
    return 0


async def _operate(args: argparse.Namespace, settings: OperatorSettings) -> None:
    """kopf's operator, at once (one replica), or once this process leads (leader election)."""
    import asyncio

    import kopf

    from aidc.management.metrics import OperatorMetrics
    from aidc.runtime.assembly import serve_metrics

    metrics = OperatorMetrics()
    serve_metrics(settings, metrics)  # before the election: a standby reports aidc_operator_leader 0
    namespaces = args.namespace or list(settings.namespaces)

    async def operate(stop: asyncio.Event | None = None) -> None:
        await kopf.operator(
            memo=kopf.Memo(settings=settings, metrics=metrics),  # read once: the start-up handler builds from these
            standalone=args.standalone,
            peering_name=args.peering,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None,
            stop_flag=stop,
        )

    if not settings.leader_election:
        await operate()
        return
    from aidc.runtime.leadership import lead, lease_candidate

    elector = lease_candidate(settings)
    try:
        await lead(elector, operate, settings.health_port)
    finally:
        await elector.server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    crds = commands.add_parser("crds", help="write crds/*.yaml (and the chart's copy) from the API models")
    crds.add_argument(
        "--out", action="append", help="directory to write (repeatable); crds/, the chart and docs/ by default"
    )
    crds.add_argument("--check", action="store_true", help="fail if the files differ from the models")
    crds.set_defaults(run=_crds)
    run = commands.add_parser("run", help="run the operator (kopf) against the current kubeconfig or in-cluster")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("--standalone", action="store_true", help="no peering: the only operator replica")
    run.add_argument("--peering", default=None, help="kopf peering object name (with --no-standalone)")
    run.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the handlers only while holding the Lease (AIDC_LEADER_ELECTION; the chart turns it on)",
    )
    run.add_argument("--verbose", "-v", action="store_true")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default), or one JSON object per line with the trainer's and server's keys",
    )
    run.set_defaults(run=_run)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
