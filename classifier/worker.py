"""The inference worker's per-process state: the model, and the road back to the websockets.

A Celery worker serving the inference queue runs one process with the solo pool (nothing forks
after CUDA is initialised). `start()` runs once as the process starts: it loads and warms up the
model, and fails the start with a clear message when the weights are missing or bad. `serve()`
answers one batch of requests (celery-batches hands them over together) with one model call, and
sends each answer straight to the consumer that asked, through the channel layer.

The channel layer is asyncio code. Each call of `async_to_sync` would run it on a fresh event
loop, and channels_redis keeps its connections per loop, so that leaks connections and pays a
connect per answer (channels_redis issues #125, #332). Instead one event loop lives in a
background thread for the life of the process and every send is scheduled onto it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer

from classifier import protocol
from classifier.inference import Predictor
from classifier.preprocessing import ImageError, encode_preview, preprocess

logger = logging.getLogger(__name__)


class ModelHolder:
    """The process's predictor, reloaded when its weights file changes.

    `reload_if_changed()` is a cheap stat, but a batch can come every few milliseconds, so it is
    checked at most every `reload_interval` seconds. The predictor itself logs a switch, and keeps
    the model that works when the new file is bad.
    """

    def __init__(
        self,
        predictor: Predictor,
        reload_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.predictor = predictor
        self.reload_interval = reload_interval
        self._clock = clock
        self._checked_at = clock()

    @classmethod
    def load(cls, weights: Path, device: str, reload_interval: float) -> ModelHolder:
        predictor = Predictor.load(weights, device=device)
        predictor.warm_up()
        return cls(predictor, reload_interval)

    def current(self) -> Predictor:
        now = self._clock()
        if now - self._checked_at >= self.reload_interval:
            self._checked_at = now
            try:
                self.predictor.reload_if_changed()
            except Exception:
                logger.exception("Checking for new weights failed; serving the current model")
        return self.predictor


class ReplySender:
    """Sends channel-layer messages from synchronous code through one long-lived event loop."""

    def __init__(self, layer: BaseChannelLayer | None = None) -> None:
        self.layer = layer if layer is not None else get_channel_layer()
        if self.layer is None:
            raise RuntimeError("No channel layer is configured (settings.CHANNEL_LAYERS).")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="digits-replies", daemon=True
        )
        self._thread.start()

    def send(self, messages: Sequence[tuple[str, dict[str, Any]]], timeout: float) -> int:
        """Send (channel, message) pairs concurrently; return how many could not be sent.

        Waits for the sends, so a worker never runs ahead of a Redis it cannot reach. A message
        that cannot be sent is logged and dropped: its client gets a `timeout` error instead.
        """
        if not messages:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._send_all(messages), self._loop)
        try:
            results = future.result(timeout)
        except TimeoutError:
            future.cancel()
            logger.error("Sending %d answers took over %.1f s; dropped", len(messages), timeout)
            return len(messages)
        failed = 0
        for (channel, _), result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                if isinstance(result, ChannelFull):
                    logger.warning("Channel %s is full; answer dropped", channel)
                else:
                    logger.error("Answer to %s not sent: %r", channel, result)
        return failed

    async def _send_all(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        return await asyncio.gather(
            *(self.layer.send(channel, message) for channel, message in messages),
            return_exceptions=True,
        )

    def close(self, timeout: float = 5.0) -> None:
        if not self._loop.is_running():
            return
        close_pools = getattr(self.layer, "close_pools", None)
        if close_pools is not None:
            try:
                asyncio.run_coroutine_threadsafe(close_pools(), self._loop).result(timeout)
            except Exception:
                logger.debug("Closing the channel layer's connections failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)


@dataclass(frozen=True)
class Answer:
    """One answer to send: to which consumer channel, and the channel-layer message."""

    channel: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Prepared:
    """One request's image made ready for the model, or the reason it could not be."""

    image: np.ndarray | None
    ms: float  # decode and preprocessing time
    error: Exception | None = None


def prepare(payload: str) -> Prepared:
    """Decode one base64 image and preprocess it; never raises."""
    t0 = time.perf_counter()
    try:
        image = preprocess(base64.b64decode(payload))
    except Exception as exc:
        return Prepared(None, (time.perf_counter() - t0) * 1000, exc)
    return Prepared(image, (time.perf_counter() - t0) * 1000)


def prepare_batch(payloads: Sequence[str]) -> list[Prepared]:
    """`prepare` every payload of a batch, in order."""
    return [prepare(payload) for payload in payloads]


def answer_batch(
    items: Sequence[Mapping[str, Any]],
    predictor: Predictor,
    now: Callable[[], float] = time.time,
) -> list[Answer]:
    """Answers for one batch of task kwargs (see `classifier.tasks.submit`).

    Every request is preprocessed on its own, so a bad image gets its own error and never fails
    the batch; the good ones go through the model in one call. Requests past their deadline are
    dropped: their client has had a `timeout` already.
    """
    started = now()
    answers: list[Answer] = []
    live = []
    for item in items:
        if item["deadline"] < started:
            logger.info("Dropped request %r: past its deadline", item["id"])
        else:
            live.append(item)
    good: list[tuple[Mapping[str, Any], Prepared]] = []
    for item, prepared in zip(live, prepare_batch([i["image"] for i in live]), strict=True):
        if prepared.error is None:
            good.append((item, prepared))
        elif isinstance(prepared.error, ImageError):
            answers.append(_error(item, prepared.error.code, str(prepared.error)))
        else:
            logger.error("Preprocessing request %r failed", item["id"], exc_info=prepared.error)
            answers.append(_error(item, protocol.INTERNAL, "The image could not be processed."))
    if not good:
        return answers

    t0 = time.perf_counter()
    try:
        probabilities, version = predictor.predict_with_version(
            np.stack([prepared.image for _, prepared in good])
        )
    except Exception:
        logger.exception("The model failed on a batch of %d", len(good))
        answers.extend(
            _error(item, protocol.INTERNAL, "The model failed; please try again.")
            for item, _ in good
        )
        return answers
    inference_ms = (time.perf_counter() - t0) * 1000

    for (item, prepared), probs in zip(good, probabilities, strict=True):
        timings = {
            "queue": max(0.0, (started - item["sent_at"]) * 1000),
            "preprocess": prepared.ms,
            "inference": inference_ms,
            "worker": (now() - started) * 1000,
        }
        frame = protocol.prediction(
            item["id"], probs, version, encode_preview(prepared.image), timings, batch=len(good)
        )
        answers.append(_answer(item, frame))
    return answers


def _answer(item: Mapping[str, Any], frame: dict[str, Any]) -> Answer:
    return Answer(item["reply_channel"], protocol.answer_message(item["ticket"], frame))


def _error(item: Mapping[str, Any], code: str, message: str) -> Answer:
    return _answer(item, protocol.error(item["id"], code, message))


class WorkerState:
    """What one worker process holds for its whole life."""

    def __init__(self, model: ModelHolder, sender: ReplySender, send_timeout: float) -> None:
        self.model = model
        self.sender = sender
        self.send_timeout = send_timeout

    def serve(self, items: Sequence[Mapping[str, Any]]) -> None:
        answers = answer_batch(items, self.model.current())
        self.sender.send([(a.channel, a.message) for a in answers], self.send_timeout)


_state: WorkerState | None = None
_state_lock = threading.Lock()


class WorkerStartError(RuntimeError):
    """The worker cannot serve (e.g. its weights are missing or bad)."""


def start(
    weights: Path,
    device: str,
    reload_interval: float,
    send_timeout: float,
    torch_threads: int = 0,
) -> WorkerState:
    """Load the model once for this process; raise `WorkerStartError` saying why it cannot.

    `torch_threads` > 0 caps PyTorch's CPU threads for this process (0 keeps its default).
    """
    global _state
    with _state_lock:
        if _state is None:
            if torch_threads > 0:
                torch.set_num_threads(torch_threads)
            try:
                model = ModelHolder.load(weights, device, reload_interval)
            except Exception as exc:
                raise WorkerStartError(f"Cannot load the model from {weights}: {exc}") from exc
            _state = WorkerState(model, ReplySender(), send_timeout)
        return _state


def state() -> WorkerState:
    if _state is None:
        raise WorkerStartError("The worker has no model: start() was not called.")
    return _state


def stop() -> None:
    global _state
    with _state_lock:
        if _state is not None:
            _state.sender.close()
            _state = None
