"""``python -m aidc_testbed up|down|status``: the test bed by hand, and for ``make demo``.

``up`` leaves the cluster running after it returns (the processes are detached) and prints how
to reach it; running ``up`` again while it runs reuses it. ``down`` stops it from any shell.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aidc_testbed.config import TestbedConfig, default_state_dir
from aidc_testbed.health import StartError
from aidc_testbed.testbed import Testbed, TestbedError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aidc_testbed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a test bed (or reuse the one running in --dir)")
    down = commands.add_parser("down", help="stop the test bed running in --dir")
    status = commands.add_parser("status", help="print what runs, as JSON")
    for command in (up, down, status):
        command.add_argument("--dir", type=Path, default=default_state_dir(), help="state directory")
    defaults = TestbedConfig()
    up.add_argument("--nodes", type=int, default=defaults.nodes, help="fake (kwok) GPU nodes")
    up.add_argument(
        "--real-nodes", type=int, default=1, help="real nodes (kubelet, containerd; needs root and `make images`)"
    )
    up.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node)
    up.add_argument("--cpu-per-node", default=defaults.cpu_per_node)
    up.add_argument("--memory-per-node", default=defaults.memory_per_node)
    up.add_argument("--pods-per-node", type=int, default=defaults.pods_per_node)
    up.add_argument("--volumes", type=int, default=defaults.volumes)
    up.add_argument(
        "--eviction-toleration-seconds",
        type=int,
        default=defaults.eviction_toleration_seconds,
        help="default NoExecute toleration: how long pods stay on a failed node",
    )
    down.add_argument("--purge", action="store_true", help="also remove logs, data and certificates")
    return parser


def _up(args: argparse.Namespace) -> int:
    config = TestbedConfig(
        state_dir=args.dir,
        nodes=args.nodes,
        real_nodes=args.real_nodes,
        gpus_per_node=args.gpus_per_node,
        cpu_per_node=args.cpu_per_node,
        memory_per_node=args.memory_per_node,
        pods_per_node=args.pods_per_node,
        volumes=args.volumes,
        eviction_toleration_seconds=args.eviction_toleration_seconds,
    )
    testbed = Testbed(config)
    if testbed.is_running():
        print(f"test bed already running in {config.state_dir}, reusing it", file=sys.stderr)
    else:
        started = time.monotonic()
        testbed.start()
        print(f"test bed up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(f"export KUBECONFIG={testbed.kubeconfig}", file=sys.stderr)
    print(testbed.kubeconfig)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        testbed = Testbed(TestbedConfig(state_dir=args.dir))
        if args.command == "down":
            testbed.stop(purge=args.purge)
            print(f"test bed in {args.dir} stopped", file=sys.stderr)
            return 0
        status = testbed.status()
        print(json.dumps(status, indent=2))
        return 0 if status["running"] else 3
    except (TestbedError, StartError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
