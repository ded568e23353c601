"""One batch of requests answered: each image preprocessed on its own, one model call for all.

Plain functions over the ML core, with no Celery or channel layer: the worker (classifier.serving
.worker) hands each batch here and sends what comes back. The timings go to the worker's metrics
(classifier.serving.metrics) as well as into each prediction frame.

Each request's task kwargs are read once, into a `messages.Task` (which holds the defaults of
what a message may leave out). A batch mixes predictions and feedback (corrections; `kind` in
the task kwargs, a missing kind meaning predict): a feedback image is preprocessed and scored
with the others, in the same model call, so the correction is stored with what the served model
says of it; then it is stored (`classifier.corrections.store.save_correction`, the worker's one
use of the database) and answered `feedback_saved`. A storage failure answers that request
`internal` and nothing else.

A predict with `"expect": "number"` is cut into candidate digits (classifier.ml.segmentation)
while it is preprocessed; its crops join the batch's one model call with every other request's
images, and the number is read back from their probabilities.

A request may carry ink (strokes) instead of an image. The batch's digits sent as ink are
drawn by the rasterizer in one call, on the model's device when it is a GPU (all their segments
in one tensor computation); a number sent as ink is cut into digits by its strokes
(classifier.ml.ink_segmentation), touching and overlapping digits included.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from classifier.ml import ink as inks
from classifier.ml.inference import Predictor
from classifier.ml.ink_segmentation import InkSegmentation, segment_ink
from classifier.ml.input import ImageError
from classifier.ml.preprocessing import decode_image, encode_preview, preprocess
from classifier.ml.rasterizer import rasterize
from classifier.ml.segmentation import Segmentation, segment
from classifier.serving import metrics, protocol
from classifier.serving.messages import (
    EXPECT_DIGIT,
    EXPECT_NUMBER,
    FEEDBACK,
    AnswerMessage,
    Drawing,
    InkLists,
    ServerFrame,
    Task,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One answer to send: to which consumer channel, and the channel-layer message."""

    channel: str
    message: AnswerMessage


@dataclass(frozen=True)
class Prepared:
    """One request's image made ready for the model, or the reason it could not be."""

    image: np.ndarray | None
    ms: float  # decode and preprocessing time
    error: Exception | None = None
    # The image file as sent (the base64 decoded once): what a correction stores.
    raw: bytes = b""
    # A number's candidate digits (then `image` is None): cut from its image or by its strokes.
    segmentation: Segmentation | InkSegmentation | None = None

    def images(self) -> np.ndarray:
        """What this request adds to the batch's model call: (N, 28, 28)."""
        if self.segmentation is not None:
            return self.segmentation.images()
        assert self.image is not None  # prepared without an error
        return self.image[None]


def prepare(payload: str, expect: str = EXPECT_DIGIT) -> Prepared:
    """Decode one base64 image and preprocess it (a number: cut it into candidate digits);
    never raises."""
    t0 = time.perf_counter()
    try:
        raw = base64.b64decode(payload)
        if expect == EXPECT_NUMBER:
            segmentation = segment(decode_image(raw))
            ms = (time.perf_counter() - t0) * 1000
            return Prepared(None, ms, raw=raw, segmentation=segmentation)
        image = preprocess(raw)
    except Exception as exc:
        return Prepared(None, (time.perf_counter() - t0) * 1000, exc)
    return Prepared(image, (time.perf_counter() - t0) * 1000, raw=raw)


def prepare_batch(
    payloads: Sequence[str], pool: Executor | None = None, expects: Sequence[str] | None = None
) -> list[Prepared]:
    """`prepare` every payload of a batch, in order; across `pool`'s threads when given.

    Pillow decodes and resizes, and numpy computes, with the GIL released for much of the
    work, so on a machine with cores to spare (a GPU host) threads shorten a batch's
    preprocessing, which then no longer dwarfs the model call. On a busy 2-core machine they
    did not pay (benchmarks/inference_speed.py), hence DIGITS_PREPROCESS_THREADS=1 by default.
    """
    expects = expects if expects is not None else [EXPECT_DIGIT] * len(payloads)
    if pool is None or len(payloads) < 2:
        return [prepare(payload, expect) for payload, expect in zip(payloads, expects, strict=True)]
    return list(pool.map(prepare, payloads, expects))


def prepare_ink_number(strokes: InkLists) -> Prepared:
    """Cut a number sent as ink into candidate digits by its strokes; never raises."""
    t0 = time.perf_counter()
    try:
        segmentation = segment_ink(inks.from_lists(strokes))
    except Exception as exc:
        return Prepared(None, (time.perf_counter() - t0) * 1000, exc)
    return Prepared(None, (time.perf_counter() - t0) * 1000, segmentation=segmentation)


def prepare_ink_digits(
    strokes: Sequence[InkLists], device: torch.device | None = None
) -> list[Prepared]:
    """Rasterize every digit of a batch sent as ink in one call (on `device`, a GPU, when
    given); never raises: when the batch's call fails, each ink is drawn alone, so one bad ink
    gets its own error."""
    if not strokes:
        return []
    t0 = time.perf_counter()
    try:
        images = rasterize([inks.from_lists(s) for s in strokes], device=device)
    except Exception:
        return [_prepare_one_ink(s) for s in strokes]
    ms = (time.perf_counter() - t0) * 1000 / len(strokes)
    return [Prepared(image, ms) for image in images]


def _prepare_one_ink(strokes: InkLists) -> Prepared:
    t0 = time.perf_counter()
    try:
        image = rasterize([inks.from_lists(strokes)])[0]
    except Exception as exc:
        return Prepared(None, (time.perf_counter() - t0) * 1000, exc)
    return Prepared(image, (time.perf_counter() - t0) * 1000)


def prepare_items(
    drawings: Sequence[Mapping[str, Any] | Drawing],
    pool: Executor | None = None,
    device: torch.device | None = None,
) -> list[Prepared]:
    """Every request of a batch made ready for the model, in order: images decoded and
    preprocessed (`prepare_batch`), digits sent as ink rasterized together, numbers sent as
    ink cut by their strokes. Each is a `messages.Drawing` (a `Task` is one) or its kwargs."""
    items = [Drawing.read(drawing) for drawing in drawings]
    images = [i for i, item in enumerate(items) if item.ink is None]
    inks_of = {i: item.ink for i, item in enumerate(items) if item.ink is not None}
    ink_digits = [i for i in inks_of if items[i].expect != EXPECT_NUMBER]
    done = dict(
        zip(
            images,
            prepare_batch(
                [items[i].image for i in images], pool, [items[i].expect for i in images]
            ),
            strict=True,
        )
    )
    done.update(
        zip(ink_digits, prepare_ink_digits([inks_of[i] for i in ink_digits], device), strict=True)
    )
    return [done[i] if i in done else prepare_ink_number(inks_of[i]) for i in range(len(items))]


def answer_batch(
    items: Sequence[Mapping[str, Any] | Task],
    predictor: Predictor,
    now: Callable[[], float] = time.time,
    pool: Executor | None = None,
    ink_device: torch.device | None = None,
) -> list[Answer]:
    """Answers for one batch of task kwargs (see `classifier.serving.enqueue.submit`).
    `ink_device` is where the batch's ink is rasterized (the worker's GPU; None: the CPU).

    Every request is preprocessed on its own, so a bad image gets its own error and never fails
    the batch; the good ones (predictions and feedback alike) go through the model in one call.
    Requests past their deadline are dropped: their client has had a `timeout` already.
    """
    started = now()
    answers: list[Answer] = []
    live: list[Task] = []
    for item in map(Task.read, items):
        if item.sent_at is not None:
            metrics.QUEUE_WAIT.observe(max(0.0, started - item.sent_at))
        if item.deadline < started:
            logger.info("Dropped request %r: past its deadline", item.id)
            metrics.WORKER_DROPPED.inc()
        else:
            live.append(item)
    good: list[tuple[Task, Prepared]] = []
    prepared_all = prepare_items(live, pool, ink_device)
    for item, prepared in zip(live, prepared_all, strict=True):
        metrics.PREPROCESS.observe(prepared.ms / 1000)
        if prepared.error is None:
            good.append((item, prepared))
        elif isinstance(prepared.error, ImageError):
            answers.append(
                _error(item, protocol.image_error_code(prepared.error), str(prepared.error))
            )
        else:
            logger.error("Preprocessing request %r failed", item.id, exc_info=prepared.error)
            answers.append(_error(item, protocol.INTERNAL, "The image could not be processed."))
    if not good:
        return answers

    metrics.BATCH_SIZE.observe(len(good))
    stacks = [prepared.images() for _, prepared in good]
    ends = np.cumsum([len(stack) for stack in stacks])
    scored = int(ends[-1])
    t0 = time.perf_counter()
    try:
        scores = predictor.predict_scored(np.concatenate(stacks))
    except Exception:
        logger.exception("The model failed on a batch of %d", len(good))
        answers.extend(
            _error(item, protocol.INTERNAL, "The model failed; please try again.")
            for item, _ in good
        )
        return answers
    inference_ms = (time.perf_counter() - t0) * 1000
    metrics.INFERENCE.observe(inference_ms / 1000)

    version = scores.version
    for (item, prepared), end, stack in zip(good, ends, stacks, strict=True):
        probs = scores.probabilities[end - len(stack) : end]
        is_digit = scores.is_digit[end - len(stack) : end]
        in_number = scores.piece_is_digit[end - len(stack) : end]
        if item.kind == FEEDBACK:
            answers.append(_store(item, prepared, probs[0], version))
            continue
        timings = {
            "queue": 0.0 if item.sent_at is None else max(0.0, (started - item.sent_at) * 1000),
            "preprocess": prepared.ms,
            "inference": inference_ms,
            "worker": (now() - started) * 1000,
        }
        if prepared.segmentation is not None:
            answers.append(
                _number(item, prepared.segmentation, probs, in_number, version, timings, scored)
            )
            continue
        assert prepared.image is not None  # a digit's, prepared without an error
        frame = protocol.prediction(
            item.id,
            probs[0],
            version,
            encode_preview(prepared.image),
            timings,
            batch=scored,
            is_digit=bool(is_digit[0]),
        )
        answers.append(_answer(item, frame))
    return answers


def _number(
    item: Task,
    segmentation: Segmentation | InkSegmentation,
    probabilities: np.ndarray,
    is_digit: np.ndarray,
    version: str,
    timings: dict[str, float],
    scored: int,
) -> Answer:
    """The answer to a number: its digits read from the crops' probabilities, each with the
    not-a-digit decision on its crop (as a piece of a number: `Scored.piece_is_digit`)."""
    try:
        digits = segmentation.read(probabilities)
    except ImageError as exc:
        return _error(item, protocol.image_error_code(exc), str(exc))
    entries = [
        protocol.number_digit(
            d.probabilities, d.box, encode_preview(d.image), is_digit=bool(is_digit[d.crop])
        )
        for d in digits
    ]
    frame = protocol.number_prediction(item.id, entries, version, timings, batch=scored)
    return _answer(item, frame)


def _store(
    item: Mapping[str, Any] | Task, prepared: Prepared, probabilities: np.ndarray, version: str
) -> Answer:
    """Store one correction with what the model said of its image; its answer either way."""
    item = Task.read(item)
    # Imported on first use: the Django app's ORM, which only a worker that stores feedback
    # needs (and Django is set up in the worker process).
    from django.conf import settings

    from classifier.corrections.store import FeedbackLimit, save_correction

    probs = [float(p) for p in probabilities]
    predicted = max(range(len(probs)), key=probs.__getitem__)
    try:
        if item.label is None or prepared.image is None:
            raise ValueError("A feedback task without its label or its image")
        _row, created = save_correction(
            image=prepared.raw,
            media_type="" if item.ink is not None else item.media_type,
            ink=item.ink,
            image28=prepared.image,
            label=item.label,
            predicted=predicted,
            confidence=probs[predicted],
            probabilities=probs,
            model_version=version,
            client_predicted=item.client_predicted,
            client_model=item.client_model,
            client_hash=item.client_hash,
            per_hour=settings.DIGITS_FEEDBACK_PER_HOUR,
        )
    except FeedbackLimit as exc:
        return _error(
            item,
            protocol.FEEDBACK_LIMIT,
            f"Thank you: you have sent {exc.limit} corrections this hour, the most one client "
            "may send; please try again later.",
        )
    except Exception:
        logger.exception("Storing the correction of request %r failed", item.id)
        return _error(
            item, protocol.INTERNAL, "The correction could not be saved; please try again."
        )
    return _answer(item, protocol.feedback_saved(item.id, duplicate=not created))


def _answer(item: Task, frame: ServerFrame) -> Answer:
    return Answer(item.reply_channel, protocol.answer_message(item.ticket, frame))


def _error(item: Task, code: str, message: str) -> Answer:
    return _answer(item, protocol.error(item.id, code, message))
