"""``python -m aidc_nodeagent [run] --kubeconfig K --node-name local-0 --gpus 0 --state-dir DIR`` and ``down``.

``run`` registers the node and runs its pods until SIGTERM/SIGINT (the pods keep running; a new
``run`` with the same state directory adopts them). ``down`` stops the agent and removes every
process, namespace and the bridge it left.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aidc_nodeagent.config import DEFAULT_TAINTS, AgentConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aidc_nodeagent", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the node (the default)")
    down = commands.add_parser("down", help="stop the agent and remove what it left on the host")
    for command in (parser, run, down):
        command.add_argument("--state-dir", type=Path, help="where the agent keeps its pods' files")
        command.add_argument("--kubeconfig", type=Path, help="the cluster's kubeconfig")
    for command in (parser, run):
        command.add_argument("--node-name", default="local-0")
        command.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu the node advertises")
        command.add_argument("--cpu", help="allocatable cpu (default: the host's cores)")
        command.add_argument("--memory", help="allocatable memory (default: the host's)")
        command.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="extra node label")
        command.add_argument(
            "--taint",
            action="append",
            metavar="KEY[=VALUE]:EFFECT",
            help=f"node taint (default {DEFAULT_TAINTS[0]}; --taint none for no taint)",
        )
        command.add_argument("--pod-cidr", help="the pods' /24 (default: a free 10.244.N.0/24)")
        command.add_argument("--kubelet-port", type=int, default=0, help="the log endpoint's port (0: any free)")
        command.add_argument("--python", type=Path, help="the interpreter `python` means in commands")
        command.add_argument("--restart-backoff-seconds", type=float, default=10.0)
        command.add_argument("--status-seconds", type=float, default=10.0, help="node status and lease period")
    down.add_argument("--delete-node", action="store_true", help="also delete the Node object")
    return parser


def _config(args: argparse.Namespace) -> AgentConfig:
    extra: dict[str, object] = {}
    if args.cpu:
        extra["cpu"] = args.cpu
    if args.memory:
        extra["memory"] = args.memory
    if args.python:
        extra["python"] = args.python
    taints = tuple(t for t in (args.taint or DEFAULT_TAINTS) if t != "none")
    return AgentConfig(
        kubeconfig=args.kubeconfig,
        state_dir=args.state_dir,
        node_name=args.node_name,
        gpus=args.gpus,
        labels=dict(item.split("=", 1) for item in args.label),
        taints=taints,
        pod_cidr=args.pod_cidr,
        kubelet_port=args.kubelet_port,
        restart_backoff_seconds=args.restart_backoff_seconds,
        status_seconds=args.status_seconds,
        **extra,  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.state_dir is None:
        print("error: --state-dir is required", file=sys.stderr)
        return 2
    if args.command == "down":
        from aidc_nodeagent.teardown import down

        down(args.state_dir, args.kubeconfig, delete_node=args.delete_node)
        return 0
    if args.kubeconfig is None:
        print("error: --kubeconfig is required", file=sys.stderr)
        return 2
    from aidc_nodeagent.agent import AgentError, NodeAgent

    try:
        agent = NodeAgent(_config(args))
        agent.start()
    except (AgentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    agent.run_until_signalled()
    return 0


if __name__ == "__main__":
    sys.exit(main())
