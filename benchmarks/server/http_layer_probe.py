"""What aiohttp costs the model server per request: the server against a bare HTTP probe, same core.

A probe, not a server: ``--serve`` answers ``POST /v2/models/digits/infer`` (and anything ending in
``/ready``) over httptools' parser (uvicorn's) on uvloop, with the server's own JSON codec, protocol
parsing, servable and dynamic batcher, and nothing else: no other routes, no auth, no metrics, no
413 limit, no keep-alive rules beyond HTTP/1.1's default. The difference between the two at the
same load is what aiohttp's request handling costs (a task, a request and a response object per
request), which is what a lean infer path inside the server would save. Both run one process and
one torch thread on the last core, wrk on the first, in 2 s slices taken in turn.

    python benchmarks/server/http_layer_probe.py [--model-dir <export>] [--slices 5]

Needs httptools (``pip install httptools``; not in the project's environment). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_server import MODEL, environment, free_port, images, json_body, pinned, train, wait_ready
from wrk_load import Point, drive, write_bodies

INFER = f"/v2/models/{MODEL}/infer"
HEAD = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


def serve(model_dir: Path, port: int) -> None:
    """The probe's server process (``--serve``)."""
    import httptools
    import torch
    import uvloop

    from aidc_trainer.allocator import keep_freed_memory
    from aidc_trainer.serving import json_codec
    from aidc_trainer.serving.batcher import DynamicBatcher
    from aidc_trainer.serving.model import load_model
    from aidc_trainer.serving.protocol import ProtocolError, encode_infer_response, parse_infer_request

    keep_freed_memory()
    torch.set_num_threads(1)
    servable = load_model(model_dir, "cpu").servable

    class Infer(asyncio.Protocol):
        def __init__(self, batcher: DynamicBatcher) -> None:
            self.batcher = batcher
            self.parser = httptools.HttpRequestParser(self)
            self.chunks: list[bytes] = []
            self.url = b""
            self.tasks: set[asyncio.Task[None]] = set()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def connection_lost(self, exc: Exception | None) -> None:
            for task in self.tasks:  # the client went away: its rows leave the batcher's queue
                task.cancel()

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_body(self, body: bytes) -> None:
            self.chunks.append(body)

        def on_message_complete(self) -> None:
            body, self.chunks = b"".join(self.chunks), []
            task = asyncio.get_running_loop().create_task(self.answer(self.url, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        async def answer(self, url: bytes, body: bytes) -> None:
            status, payload = b"200 OK", b""
            if not url.endswith(b"/ready"):
                try:
                    parsed = parse_infer_request(json_codec.loads_infer(body), servable.inputs, servable.outputs)
                    work = servable.prepare(parsed.inputs, parsed.parameters)
                    tensors = await self.batcher.submit(work)
                    response, _ = encode_infer_response(
                        MODEL, "1", parsed.id, tensors, servable.outputs, parsed.outputs
                    )
                    payload = json_codec.dumps(response)
                except ProtocolError as error:
                    status, payload = b"400 Bad Request", json_codec.dumps({"error": error.message})
            if not self.transport.is_closing():
                self.transport.write(HEAD % (status, len(payload)) + payload)

    async def main() -> None:
        batcher = DynamicBatcher(servable.run, max_batch_size=32, max_delay=0.005)
        batcher.start()
        server = await asyncio.get_running_loop().create_server(lambda: Infer(batcher), "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def start(command: list[str], core: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        pinned(core, [*command, "--port", str(port)]),
        env=environment(1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, Path(os.devnull))
    return process, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-dir", type=Path, help="an exported classifier (default: train one now)")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.model_dir, arguments.port)
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    load_core, server_core = cpus[0], cpus[-1]
    with tempfile.TemporaryDirectory(prefix="aidc-http-probe-") as scratch_name:
        scratch = Path(scratch_name)
        model_dir = arguments.model_dir or train(scratch / "train")
        bodies = write_bodies(scratch / "json", [json_body(p) for p in images(16)], None)
        script = scratch / "load.lua"
        server = [sys.executable, "-m", "aidc_trainer.serving", "--model-dir", str(model_dir), "--model-name", MODEL,
                  "--host", "127.0.0.1", "--max-batch-size", "32", "--max-delay-ms", "5", "--device", "cpu",
                  "--workers", "1"]  # fmt: skip
        probe = [sys.executable, __file__, "--serve", "--model-dir", str(model_dir)]
        started = {"aidc server (aiohttp)": start(server, server_core), "probe (httptools)": start(probe, server_core)}
        points: dict[tuple[str, int], list[Point]] = {}
        try:
            for _, url in started.values():  # unmeasured: the probe has no warm-up of its own
                drive(url, INFER, bodies, 64, 2, load_core, script)
            for clients in (64, 1):
                for _ in range(arguments.slices):
                    for name, (_, url) in started.items():
                        point = drive(url, INFER, bodies, clients, 2, load_core, script)
                        points.setdefault((name, clients), []).append(point)
        finally:
            for process, _ in started.values():
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    for (name, clients), slices in points.items():
        rates = ", ".join(f"{p.requests / p.seconds:,.0f}" for p in slices)
        p99 = ", ".join(f"{p.p99_ms:.1f}" for p in slices)
        errors = sum(p.errors for p in slices)
        print(f"{name:22} {clients:3} clients: req/s {rates}; p99 ms {p99}; errors {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
