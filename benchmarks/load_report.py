"""What the load benchmark prints: each phase, how the work divided among the workers, the
scaling summary, and the comparisons (number against digit, HTTP against websocket, the service
against the direct server, its CPU per answer against the in-process limit)."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import numpy as np
from django.conf import settings

from benchmarks.load_phases import PhaseResult
from classifier.serving import protocol

TIMING_NAMES = ("queue", "preprocess", "inference", "worker", "server")


def percentile(values: list[float], q: float) -> float:
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


def load_average(avg: tuple[float, float, float]) -> str:
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
        f"p50 {percentile(lat, 50):6.1f}  p95 {percentile(lat, 95):6.1f}  "
        f"p99 {percentile(lat, 99):6.1f}  max {max(lat, default=float('nan')):6.1f} ms  "
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
            f"p50 {percentile(rtt, 50):.2f} ms, p95 {percentile(rtt, 95):.2f} ms"
        )
    before, after = load_average(result.load_before), load_average(result.load_after)
    print(f"    load average before {before}, after {after}")


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
                f"{result.rate:7.1f}/s  p50 {percentile(lat, 50):6.1f}  "
                f"p95 {percentile(lat, 95):6.1f}  p99 {percentile(lat, 99):6.1f} ms  "
                f"mean batch {statistics.fmean(result.batches) if result.batches else 0:.1f}  "
                f"CPU ms/answer {total_cpu:.2f} (workers {worker_cpu:.2f})"
                + (f"  [{shares}]" if shares else "")
            )


def print_comparison(service: list[PhaseResult], direct: list[PhaseResult]) -> None:
    """The service against the direct server, phase by phase (the same phases, one run)."""
    print("\nService against the direct server (one process, no queue, no batching):")
    for ours, theirs in zip(service, direct, strict=True):
        mode = f"{ours.clients} clients x {ours.inflight}" + (
            f" every {1000 * ours.interval:g} ms" if ours.interval else ""
        )
        ratio = ours.rate / theirs.rate if theirs.rate else float("nan")
        p50 = percentile(ours.latencies, 50) / percentile(theirs.latencies, 50)
        print(
            f"  {mode}: {ours.rate:.1f} against {theirs.rate:.1f} predictions/s = {ratio:.2f}x; "
            f"p50 {percentile(ours.latencies, 50):.1f} against "
            f"{percentile(theirs.latencies, 50):.1f} ms = {p50:.2f}x; "
            f"p99 {percentile(ours.latencies, 99):.1f} against "
            f"{percentile(theirs.latencies, 99):.1f} ms; errors "
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
        a, b = percentile(pooled["http"], q), percentile(pooled["ws"], q)
        print(f"One client, p{q}: HTTP {a:.2f} ms, websocket {b:.2f} ms: {a - b:+.2f} ms")
    # On a shared machine the load drifts between phases: the median of each HTTP phase's p50
    # minus its neighbouring websocket phase's is steadier than the pooled figures.
    ones = [r for r in results if r.clients == 1 and r.inflight == 1 and r.latencies]
    pairs = [
        percentile(h.latencies, 50) - percentile(w.latencies, 50)
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
        a, b = percentile(number, q), percentile(digit, q)
        print(f"One client, p{q}: number {a:.1f} ms / digit {b:.1f} ms = {a / b:.2f}x")
