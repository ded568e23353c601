"""The load benchmark's phases: the clients, what a phase measured, and the in-process limit.

A phase opens C clients in this one process (websockets, or HTTP through `benchmarks.http_socket`);
each keeps K requests in flight, or sends one every interval with at most K in flight, and checks
every answer against the request it was for. Meanwhile another process times Redis round trips,
and the service's processes' CPU time and each worker's counts are read before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import websockets
from django.conf import settings
from websockets.typing import Origin

from benchmarks.http_socket import HttpSocket
from benchmarks.load_drawings import Images
from benchmarks.load_stack import Service, WorkerCount, machine_cpu, process_cpu, scrape_workers
from classifier.serving import protocol

# A client's way in: a websocket, or the HTTP API behind the same send/recv/close.
Connection = websockets.ClientConnection | HttpSocket

# --- The in-process limit -------------------------------------------------------------------------


def in_process_limit(images: Images, seconds: float, device: str) -> tuple[float, int]:
    """Images/s of decode + preprocess + model alone: the worker's code, batch size and threads.

    The base64 payloads go through the same `prepare_items` the worker runs on its tasks (on
    as many threads as DIGITS_PREPROCESS_THREADS gives it; ink rasterized on the model's device
    when it is a GPU), and the batches through the same `Predictor`; no Celery, Redis, websocket
    or answer encoding.
    """
    import torch

    from classifier.ml.inference import Predictor
    from classifier.serving.batch import prepare_items
    from classifier.serving.messages import Task

    if settings.DIGITS_TORCH_THREADS > 0:
        torch.set_num_threads(settings.DIGITS_TORCH_THREADS)
    predictor = Predictor.load(settings.DIGITS_WEIGHTS, device=device)
    predictor.warm_up()
    batch = settings.DIGITS_BATCH_SIZE
    if images.input == "ink":
        items = [Task(str(n), "", n, ink=json.loads(ink)) for n, ink in enumerate(images.inks)]
    else:
        items = [
            Task(str(n), "", n, image=url.split(",", 1)[1]) for n, url in enumerate(images.urls)
        ]
    rasterize_on = predictor.device if predictor.device.type == "cuda" else None
    threads = settings.DIGITS_PREPROCESS_THREADS
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        done = 0
        started = time.perf_counter()
        while True:
            for start in range(0, len(items), batch):
                prepared = prepare_items(items[start : start + batch], pool, rasterize_on)
                predictor.predict_with_version(
                    np.stack([p.image for p in prepared if p.image is not None])
                )
                done += len(prepared)
            if time.perf_counter() - started >= seconds:
                return done / (time.perf_counter() - started), batch


# --- Load -----------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    clients: int
    inflight: int
    interval: float  # seconds between a client's sends; 0: closed loop
    expect: str = protocol.EXPECT_DIGIT
    input: str = "png"  # how the drawing was sent: "png" or "ink"
    via: str = "ws"  # which way in: "ws" (the websocket) or "http" (the HTTP API)
    window: float = 0.0  # seconds measured (after the warm-up)
    sent: int = 0
    skipped: int = 0  # open loop: ticks skipped because the client had `inflight` outstanding
    predictions: int = 0  # all predictions received, warm-up included
    measured: int = 0  # predictions received within the measured window
    correct: int = 0
    lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # ms, requests sent in the window
    batches: list[int] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU time per answer, by process
    machine_busy: float = 0.0  # share of all the machine's CPU time in use during the phase
    ours_busy: float = 0.0  # the share of it the service and the clients used
    redis_rtt: list[float] = field(default_factory=list)  # ms, PINGs from another process
    # By worker, from its metrics: what it served during the phase, warm-up and drain included.
    workers: dict[str, WorkerCount] = field(default_factory=dict)
    workers_alive: int = 0  # workers of a stack started with --workers (0: not compared)

    @property
    def rate(self) -> float:
        return self.measured / self.window if self.window else 0.0


class _Clock:
    """The phase's schedule, shared by its clients."""

    def __init__(self, warmup: float, duration: float, drain: float, max_requests: int) -> None:
        self.start = time.perf_counter()
        self.measure_from = self.start + warmup
        self.stop_sending = self.start + duration
        self.drain_until = self.stop_sending + drain
        self.budget = max_requests or sys.maxsize

    def may_send(self) -> bool:
        if self.budget <= 0 or time.perf_counter() >= self.stop_sending:
            return False
        self.budget -= 1
        return True


async def _run_client(
    connection: Connection,
    name: str,
    images: Images,
    inflight: int,
    interval: float,
    clock: _Clock,
    result: PhaseResult,
    offset: int,
) -> None:
    """One socket until the phase ends, checking every answer.

    `interval` 0: keep `inflight` requests outstanding (a new one as each answer comes back),
    which measures capacity. `interval` > 0: send every `interval` seconds while fewer than
    `inflight` are outstanding, as the page does while a stroke grows (a tick at the cap is
    skipped, as the page skips it), which measures latency at a given offered load.
    """
    in_flight: dict[str, tuple[float, int | str]] = {}  # id -> (sent at, label)
    number = images.expect == protocol.EXPECT_NUMBER
    expect = f',"expect":"{images.expect}"' if number else ""
    count = 0
    sending = True
    settled = asyncio.Event()  # nothing more to send, nothing in flight

    async def send_one() -> None:
        nonlocal count, sending
        if not clock.may_send():
            sending = False
            return
        index = (offset + count) % len(images.urls)
        request_id = f"{name}-{count}"
        count += 1
        in_flight[request_id] = (time.perf_counter(), images.labels[index])
        result.sent += 1
        await connection.send(
            f'{{"type":"predict","id":"{request_id}",{images.body(index)}{expect}}}'
        )

    def check_settled() -> None:
        if not sending and not in_flight:
            settled.set()

    async def receive() -> None:
        while True:
            try:
                raw = await connection.recv()
            except websockets.exceptions.ConnectionClosed:
                result.errors["connection_closed"] += 1
                return
            received = time.perf_counter()
            answer = json.loads(raw)
            entry = in_flight.pop(answer.get("id"), None)
            if entry is None:
                result.errors["unexpected_id"] += 1
                continue
            sent_at, label = entry
            if answer.get("type") == protocol.PREDICTION:
                result.predictions += 1
                if clock.measure_from <= sent_at and received <= clock.stop_sending:
                    result.measured += 1
                    result.latencies.append((received - sent_at) * 1000)
                    result.correct += answer["number" if number else "digit"] == label
                    result.batches.append(answer.get("batch", 1))
                    for key, value in answer.get("timings_ms", {}).items():
                        result.timings.setdefault(key, []).append(value)
            else:
                result.errors[str(answer.get("code"))] += 1
            if interval == 0 and sending:
                await send_one()
            check_settled()

    receiver = asyncio.create_task(receive())
    try:
        if interval == 0:
            for _ in range(inflight):
                if sending:
                    await send_one()
        else:
            # Clients start spread over one interval, as independent people would.
            next_at = time.perf_counter() + interval * offset / max(1, len(images.urls))
            while sending:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
                if len(in_flight) < inflight:
                    await send_one()
                elif time.perf_counter() < clock.stop_sending:
                    result.skipped += 1
                else:
                    sending = False
        check_settled()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settled.wait(), clock.drain_until - time.perf_counter())
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.exceptions.ConnectionClosed):
            await receiver
    result.lost += len(in_flight)


async def run_phase(
    images: Images,
    clients: int,
    inflight: int,
    interval: float,
    duration: float,
    warmup: float,
    drain: float,
    max_requests: int,
    service: Service,
    via: str = "ws",
) -> PhaseResult:
    result = PhaseResult(clients, inflight, interval, images.expect, input=images.input, via=via)
    result.load_before = os.getloadavg()
    processes = {**service.processes, "clients": os.getpid()}
    connections: list[Connection] = await asyncio.gather(
        *(
            HttpSocket.connect(service.origin, inflight)
            if via == "http"
            else websockets.connect(
                service.url,
                origin=Origin(service.origin),
                compression=None,
                max_size=None,
                open_timeout=20,
            )
            for _ in range(clients)
        )
    )
    probe = start_redis_probe(service.redis_url, warmup + duration)
    counts_before = scrape_workers(service.worker_metrics)
    cpu_before = {role: process_cpu(pid) for role, pid in processes.items()}
    busy_before, total_before = machine_cpu()
    started = time.perf_counter()
    try:
        clock = _Clock(warmup, warmup + duration, drain, max_requests)
        stride = max(1, len(images.urls) // clients)
        await asyncio.gather(
            *(
                _run_client(conn, f"c{n}", images, inflight, interval, clock, result, n * stride)
                for n, conn in enumerate(connections)
            )
        )
        result.window = clock.stop_sending - clock.measure_from
    finally:
        await asyncio.gather(*(conn.close() for conn in connections), return_exceptions=True)
        if probe is not None:
            result.redis_rtt = await asyncio.to_thread(finish_redis_probe, probe)
    result.load_after = os.getloadavg()
    counts_after = scrape_workers(service.worker_metrics)
    result.workers = {
        role: counts_after[role] - counts_before[role]
        for role in sorted(counts_before.keys() & counts_after.keys())
    }
    result.workers_alive = service.workers
    answered = result.predictions + sum(result.errors.values())
    for role, pid in processes.items():
        result.cpu_ms[role] = 1000 * (process_cpu(pid) - cpu_before[role]) / max(answered, 1)
    busy_after, total_after = machine_cpu()
    result.machine_busy = (busy_after - busy_before) / max(total_after - total_before, 1.0)
    ours = sum(result.cpu_ms.values()) * max(answered, 1) / 1000
    result.ours_busy = ours / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    return result


# A separate process timing Redis round trips (PING every 20 ms) while a phase runs: on a busy
# machine every hop of a request waits about this long to be scheduled.
_PROBE = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1], socket_timeout=5)
samples, end = [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    started = time.perf_counter()
    client.ping()
    samples.append((time.perf_counter() - started) * 1000)
    time.sleep(0.02)
print(" ".join(f"{s:.3f}" for s in samples))
"""


def start_redis_probe(redis_url: str | None, seconds: float) -> subprocess.Popen[str] | None:
    if not redis_url:
        return None
    argv = [sys.executable, "-c", _PROBE, redis_url, str(seconds)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def finish_redis_probe(probe: subprocess.Popen[str]) -> list[float]:
    try:
        out, _ = probe.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.communicate()
        return []
    return [float(v) for v in out.split()] if probe.returncode == 0 else []
