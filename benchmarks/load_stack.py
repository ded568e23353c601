"""The stack the load benchmark measures, and what it knows of its insides.

`local_stack` starts `manage.py runstack` (what `make run` starts) on a free port and stops it;
`direct_server` starts `benchmarks.direct_server`, the yardstick with no queue and no batching.
Each yields a `Service`: where it answers, its processes by role (for their CPU time, read from
Linux's /proc: empty elsewhere) and each worker's metrics URL (for the batches, images and
answers it served, from its Prometheus counters).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.options import ROOT
from classifier.management.devstack import free_port
from classifier.serving.protocol import PREDICT_PATH

STACK_START_TIMEOUT = 180.0
# What benchmarks/direct_server.py prints once it listens.
DIRECT_READY = "Direct server listening"


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


# --- Each worker's own count (its Prometheus metrics) ---------------------------------------------


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
    values: dict[str, float] = defaultdict(float)
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
    from classifier.serving.tasks import READY_MESSAGE  # reads the settings: not at import

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
    """`python -m benchmarks.direct_server` on a free port (one process, no queue, no batching, the
    worker's code inline), until the block ends."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.direct_server", "--port", str(port)]
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
            raise RuntimeError(f"benchmarks.direct_server exited ({process.wait()})")
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


def _ready_workers(url: str) -> list[dict[str, object]]:
    """The workers /readyz lists; none until it answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return list(json.loads(response.read()).get("workers", []))
    except (OSError, ValueError):  # refused, or 503 (HTTPError) while no worker is announced
        return []
