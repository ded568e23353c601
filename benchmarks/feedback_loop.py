"""The feedback loop, played by users: draw, correct, accept, retrain, hot swap, score.

    .venv/bin/python -m benchmarks.feedback_loop [--writers 30] [--others 14] [--per-digit 3]

Writers are people the model has never seen: each is a seeded random hand (a writing style per
digit from the stroke templates of classifier/ml/training/canvas.py: crossed or plain 7, flagged 1,
open 4, curly 9, slashed 0...; a slant, a width-to-height ratio, a usual size and a brush of their
own), and each drawing of theirs varies around that hand (size, place, slant, a slight rotation
and a smooth wobble of the strokes). The canvases are the page's own: white ink on black, at the
size the page exports.

Steps, all through the real service (`manage.py runstack`: a private Redis, a worker, uvicorn),
with a temporary copy of the shipped weights as DIGITS_WEIGHTS and a temporary SQLite database:

1. writers 1..W draw every digit `--per-digit` times through the websocket: each drawing is
   predicted, then sent back as a `feedback` frame with the digit they meant;
2. writers W+1..W+O (the others) draw every digit, and are scored: "before";
3. `manage.py feedback accept --all`, then `manage.py retrain --json`;
4. once /readyz shows the worker serving the model retrain left (workers swap weights before a
   batch, so a probe goes every so often), the others' same drawings are scored again: "after".

Every frame sent must be answered (a `prediction`, a `feedback_saved` or an `error`); answers
that never come are counted as lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import options
from benchmarks.load_report import machine_line
from benchmarks.load_stack import local_stack
from classifier.ml.brush import compose, draw_mask
from classifier.ml.training.canvas import (
    CANVAS_SIZE,
    PAGE_BRUSH_PX,
    TEMPLATES,
    template_segments,
    to_png,
)
from classifier.serving import protocol

# The size of the canvas export the page sends (frontend/static/frontend/app.js, EXPORT_SIZE).
EXPORT_SIZE = 192
# Seconds to wait for one answer before counting it lost (the server answers `timeout` itself
# after DIGITS_REQUEST_TIMEOUT, 5 s by default).
ANSWER_TIMEOUT = 30.0
# Seconds to wait for the worker to serve the promoted model, and between probes meanwhile.
SWAP_TIMEOUT = 120.0
SWAP_PROBE_INTERVAL = 0.5
DIGIT_RANGE = range(10)


# --- Writers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """One person's hand: what stays the same across their drawings."""

    number: int
    variants: tuple[str, ...]  # the template variant they write, for each digit 0..9
    slant: float  # x shift per unit of height (right-leaning > 0)
    aspect: float  # width relative to the template's
    height: float  # usual digit height, share of the canvas
    brush: float  # brush width relative to the page's brush


# How often a writer's digit is one of the styles MNIST lacks (any template variant but the first,
# the plain one), where the digit has such a style.
UNUSUAL_STYLE_SHARE = 0.75


def _pick_variant(variants: list[str], rng: np.random.Generator) -> str:
    if len(variants) > 1 and rng.random() < UNUSUAL_STYLE_SHARE:
        return str(rng.choice(variants[1:]))
    return variants[0]


def make_writer(number: int, seed: int = 0) -> Writer:
    """Writer `number`'s hand; the same for the same (number, seed)."""
    rng = np.random.default_rng([seed, number])
    variants = tuple(_pick_variant(list(TEMPLATES[digit]), rng) for digit in DIGIT_RANGE)
    return Writer(
        number=number,
        variants=variants,
        slant=float(rng.uniform(-0.35, 0.55)),
        aspect=float(rng.uniform(0.5, 1.4)),
        height=float(rng.uniform(0.25, 0.8)),
        brush=float(rng.uniform(0.6, 1.6)),
    )


def draw(writer: Writer, digit: int, rng: np.random.Generator, size: int = EXPORT_SIZE) -> bytes:
    """PNG bytes of one drawing of `digit` by `writer`, as the page sends it (white on black)."""
    segments = template_segments(TEMPLATES[digit][writer.variants[digit]]) - 0.5
    # A smooth wobble: the strokes bend a little, differently each time.
    phase, amplitude = rng.uniform(0, 2 * math.pi, 2), rng.uniform(0.0, 0.09, 2)
    x, y = segments[..., 0].copy(), segments[..., 1].copy()
    x += amplitude[0] * np.sin(2 * math.pi * y + phase[0])
    y += amplitude[1] * np.sin(2 * math.pi * x + phase[1])
    x = x * writer.aspect - (writer.slant + rng.normal(0, 0.05)) * y
    angle = math.radians(rng.normal(0, 8))
    x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
    height = float(np.clip(writer.height * rng.uniform(0.85, 1.15), 0.25, 0.9)) * size
    brush = min(writer.brush * PAGE_BRUSH_PX * size / CANVAS_SIZE, 0.25 * height)
    half_w = (float(np.abs(x).max()) * height) + brush
    half_h = (float(np.abs(y).max()) * height) + brush
    centre = (
        float(rng.uniform(min(half_w, size / 2), max(size - half_w, size / 2))),
        float(rng.uniform(min(half_h, size / 2), max(size - half_h, size / 2))),
    )
    points = np.stack([x, y], axis=-1) * height + np.array(centre, dtype=np.float32)
    return to_png(compose(draw_mask(points, size=size, brush=brush), "page"))


@dataclass(frozen=True)
class Drawing:
    writer: int
    digit: int
    url: str  # the data URL the page sends


def drawings_of(writers: range, per_digit: int, seed: int) -> list[Drawing]:
    """Every digit `per_digit` times by each writer, in the order they draw them."""
    result = []
    for number in writers:
        writer = make_writer(number, seed)
        rng = np.random.default_rng([seed, number, 1])
        for _ in range(per_digit):
            for digit in DIGIT_RANGE:
                png = draw(writer, digit, rng)
                url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                result.append(Drawing(number, digit, url))
    return result


# --- Frames (the page's protocol: docs/protocol.md) ----------------------------------------------


def predict_frame(request_id: str, url: str) -> str:
    return json.dumps({"type": protocol.PREDICT, "id": request_id, "image": url})


def feedback_frame(
    request_id: str, url: str, digit: int, predicted: int | None, model: str | None
) -> str:
    """What the page sends when its user says which digit they drew."""
    return json.dumps(
        {
            "type": protocol.FEEDBACK,
            "id": request_id,
            "image": url,
            "digit": digit,
            "predicted": predicted,
            "model": model,
        }
    )


# --- Playing users through the socket ------------------------------------------------------------


@dataclass
class Tally:
    """Frames sent and what came back, over one phase."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    correct: int = 0
    scored: int = 0
    models: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.answers += other.answers
        self.errors += other.errors
        self.lost += other.lost
        self.seconds += other.seconds

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / max(self.scored, 1)


async def _ask(socket, frame: str, request_id: str, kind: str, tally: Tally) -> dict | None:
    """Send one frame; its answer, or None when none came (counted lost)."""
    tally.sent[kind] += 1
    await socket.send(frame)
    try:
        while True:
            answer = json.loads(await asyncio.wait_for(socket.recv(), ANSWER_TIMEOUT))
            if answer.get("id") == request_id:
                break
    except TimeoutError:
        tally.lost += 1
        return None
    tally.answers[answer["type"]] += 1
    if answer["type"] == protocol.ERROR:
        tally.errors[answer.get("code", "?")] += 1
    return answer


async def _play(
    url: str, origin: str, drawings: list[Drawing], correct: bool, tally: Tally
) -> None:
    """One writer at the page: each drawing predicted, then (when `correct`) its digit told."""
    import websockets
    from websockets.typing import Origin

    async with websockets.connect(
        url, origin=Origin(origin), compression=None, max_size=None
    ) as socket:
        for drawing in drawings:
            request_id = uuid.uuid4().hex
            answer = await _ask(
                socket, predict_frame(request_id, drawing.url), request_id, "predict", tally
            )
            predicted, model = None, None
            if answer and answer["type"] == protocol.PREDICTION:
                # No digit (None) when the model's score says it is not one: a miss.
                predicted, model = answer["digit"], str(answer["model"])
                tally.scored += 1
                tally.correct += predicted == drawing.digit
                tally.models[model] += 1
            if correct:
                request_id = uuid.uuid4().hex
                frame = feedback_frame(request_id, drawing.url, drawing.digit, predicted, model)
                await _ask(socket, frame, request_id, "feedback", tally)


async def _phase(
    url: str, origin: str, drawings: list[Drawing], correct: bool, concurrency: int
) -> Tally:
    """All the writers of `drawings`, `concurrency` of them at the page at once."""
    by_writer: dict[int, list[Drawing]] = {}
    for drawing in drawings:
        by_writer.setdefault(drawing.writer, []).append(drawing)
    tally, gate = Tally(), asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(items: list[Drawing]) -> None:
        async with gate:
            await _play(url, origin, items, correct, tally)

    await asyncio.gather(*(one(items) for items in by_writer.values()))
    tally.seconds = time.perf_counter() - started
    return tally


def run_phase(
    url: str, origin: str, drawings: list[Drawing], correct: bool, concurrency: int
) -> Tally:
    """One phase, from the page's origin (the server checks it, as a browser sends it)."""
    return asyncio.run(_phase(url, origin, drawings, correct, concurrency))


def served_models(origin: str) -> list[str]:
    """The model version each worker in /readyz serves."""
    try:
        with urllib.request.urlopen(f"{origin}/readyz", timeout=2) as response:
            return [str(w.get("model")) for w in json.loads(response.read()).get("workers", [])]
    except (OSError, ValueError):
        return []


def wait_for_model(url: str, origin: str, version: str, probe: Drawing) -> float:
    """Seconds until every worker serves `version`; probes keep batches coming meanwhile (a
    worker looks at DIGITS_WEIGHTS before a batch)."""
    started = time.perf_counter()
    while not (models := served_models(origin)) or any(m != version for m in models):
        if time.perf_counter() - started > SWAP_TIMEOUT:
            raise RuntimeError(f"The workers serve {models}, not {version}, after {SWAP_TIMEOUT} s")
        run_phase(url, origin, [probe], correct=False, concurrency=1)
        time.sleep(SWAP_PROBE_INTERVAL)
    return time.perf_counter() - started


def manage(args: list[str], env: dict[str, str], log: Path, echo: bool = False) -> str:
    """Run a manage.py command with the stack's environment; its stdout (stderr to `log`).
    With `echo`, its lines are printed as they come (retrain's progress)."""
    lines = []
    with log.open("ab") as errors:
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=options.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert process.stdout is not None  # a pipe
        for line in process.stdout:
            lines.append(line)
            if echo:
                print(f"    {args[0]}: {line.rstrip()}", flush=True)
        process.wait()
    out = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({process.returncode}): {out}; {log}"
        )
    return out


# --- Report ---------------------------------------------------------------------------------------


def percent(value: object) -> str:
    """An accuracy from retrain's JSON (a share, or already in percent) as "99.62%"."""
    if not isinstance(value, int | float):
        return "?"
    return f"{100 * value if value <= 1 else value:.2f}%"


def tally_line(name: str, tally: Tally) -> str:
    sent = sum(tally.sent.values())
    answered = sum(tally.answers.values())
    return (
        f"{name}: {sent} frames sent ({dict(tally.sent)}), {answered} answered "
        f"({dict(tally.answers)}), errors {dict(tally.errors) or 0}, lost {tally.lost}; "
        f"{tally.seconds:.1f} s" + (f"; answered by {dict(tally.models)}" if tally.models else "")
    )


def main() -> int:
    parser = options.parser(__doc__)
    options.add_writers(parser)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="retrain's --epochs (default: none given, retrain's own default)",
    )
    options.add_data_dir(parser, "MNIST directory, the stack's DIGITS_DATA_DIR")
    options.add_weights(parser, "weights copied to serve first")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="writers at the page at once (default: 8)"
    )
    options.add_seed(parser, what="writers' seed")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="digits-loop-"))
    weights = directory / "weights" / args.weights.name
    weights.parent.mkdir()
    for source in (args.weights, args.weights.with_name(args.weights.name + ".json")):
        if source.exists():
            shutil.copy2(source, weights.parent / source.name)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "digits_site.settings",
            "DIGITS_WEIGHTS": str(weights),
            "DIGITS_DATA_DIR": str(args.data_dir),
            "DATABASE_URL": f"sqlite:///{directory / 'digits.sqlite3'}",
        }
    )
    options.setup_django()  # after the environment above: the settings read it
    print(f"Machine: {machine_line()}")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    trainers = drawings_of(range(1, args.writers + 1), args.per_digit, args.seed)
    others = drawings_of(
        range(args.writers + 1, args.writers + args.others + 1), args.per_digit, args.seed
    )
    timings["drawing the digits"] = time.perf_counter() - started
    print(
        f"{args.writers} writers x 10 digits x {args.per_digit} = {len(trainers)} drawings "
        f"corrected; {args.others} other writers: {len(others)} drawings scored; seed {args.seed}"
    )
    env = os.environ.copy()
    env.pop("REDIS_URL", None)
    log = directory / "commands.log"
    total = Tally()
    mark = time.perf_counter()
    with local_stack(None, "cpu", 16) as service:
        timings["stack start"] = time.perf_counter() - mark
        print(f"Service: runstack at {service.url}, per-client limits off; files in {directory}")
        first = served_models(service.origin)

        corrected = run_phase(service.url, service.origin, trainers, True, args.concurrency)
        total.add(corrected)
        timings["writers draw and correct"] = corrected.seconds
        before = run_phase(service.url, service.origin, others, False, args.concurrency)
        total.add(before)
        timings["others scored before"] = before.seconds

        mark = time.perf_counter()
        accepted = manage(["feedback", "accept", "--all"], env, log).strip()
        timings["feedback accept --all"] = time.perf_counter() - mark
        retrain = ["retrain", "--json"] + (
            [] if args.epochs is None else ["--epochs", str(args.epochs)]
        )
        mark = time.perf_counter()
        output = manage(retrain, env, log, echo=True)
        timings["retrain --json"] = time.perf_counter() - mark
        result = json.loads(output.strip().splitlines()[-1])
        mark = time.perf_counter()
        timings["hot swap seen in /readyz"] = wait_for_model(
            service.url, service.origin, str(result["model"]), others[0]
        )
        after = run_phase(service.url, service.origin, others, False, args.concurrency)
        total.add(after)
        timings["others scored after"] = after.seconds
        service.keep_log = bool(total.lost or total.errors)

    print()
    print(f"model served first: {', '.join(first)}; after retrain: {result['model']}")
    print(f"accept: {accepted}")
    print(
        f"retrain: promoted {result['promoted']} ({result.get('reason')}); "
        f"corrections {result.get('corrections')}"
    )
    for name in ("served", "candidate"):
        print(f"  {name}: {result.get(name)}")
    served, candidate = result.get("served") or {}, result.get("candidate") or {}
    mnist_after = candidate if result["promoted"] else served
    print(
        f"MNIST test: before {percent(served.get('mnist_test'))}, "
        f"after {percent(mnist_after.get('mnist_test'))}; held-out corrections: before "
        f"{percent(served.get('held_out'))}, after {percent(mnist_after.get('held_out'))}"
    )
    print(
        f"OTHER WRITERS: before {before.accuracy:.2f}% ({before.correct}/{before.scored}), "
        f"after {after.accuracy:.2f}% ({after.correct}/{after.scored})"
    )
    print(
        f"the writers themselves, as they corrected: {corrected.accuracy:.2f}% "
        f"({corrected.correct}/{corrected.scored})"
    )
    for name, tally in (("correct", corrected), ("before", before), ("after", after)):
        print(tally_line(f"  {name}", tally))
    print(tally_line("all", total))
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    unanswered = sum(total.sent.values()) - sum(total.answers.values())
    if not total.lost and not total.errors:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if unanswered or total.lost else 0


if __name__ == "__main__":
    sys.exit(main())
