"""The inference worker's per-process state: the model, and the road back to the websockets.

A Celery worker serving the inference queue runs one process with the solo pool (nothing forks
after CUDA is initialised). `start()` runs once as the process starts: it loads and warms up the
model, and fails the start with a clear message when the weights are missing or bad. `serve()`
answers one batch of requests (celery-batches hands them over together) with one model call
(classifier.serving.batch), and sends each answer straight to the consumer that asked, through
the channel layer (classifier.transport.replies: one Redis round trip per batch).

The worker's metrics (classifier.serving.metrics) are observed here and in the batch code: the
model served and its swaps by the holder, the answers sent by `serve`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from classifier.ml.inference import Predictor
from classifier.serving import metrics
from classifier.serving.batch import answer_batch
from classifier.transport.replies import ReplySender

logger = logging.getLogger(__name__)


class ModelHolder:
    """The process's predictor, reloaded when its weights file changes.

    `reload_if_changed()` is a cheap stat, but a batch can come every few milliseconds, so it is
    checked at most every `reload_interval` seconds. The predictor itself logs a switch, and keeps
    the model that works when the new file is bad. The holder is the process's one: it sets the
    model info gauge, and counts swaps.
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
        metrics.model_loaded(predictor.version, str(predictor.device))

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
                if self.predictor.reload_if_changed():
                    metrics.model_swapped(self.predictor.version, str(self.predictor.device))
            except Exception:
                logger.exception("Checking for new weights failed; serving the current model")
        return self.predictor


class WorkerState:
    """What one worker process holds for its whole life."""

    def __init__(
        self, model: ModelHolder, sender: ReplySender, pool: ThreadPoolExecutor | None = None
    ) -> None:
        self.model = model
        self.sender = sender
        self.pool = pool  # preprocessing threads, when DIGITS_PREPROCESS_THREADS > 1
        self.answered = 0  # answers sent since the process started
        self._rate = metrics.RateMeter()

    def serve(self, items: Sequence[Mapping[str, Any]]) -> None:
        predictor = self.model.current()
        # Ink is drawn on the model's GPU when it has one (the whole batch in one tensor
        # computation); on a CPU the rasterizer's numpy path is the faster.
        ink_device = predictor.device if predictor.device.type == "cuda" else None
        answers = answer_batch(items, predictor, pool=self.pool, ink_device=ink_device)
        unsent = self.sender.send([(a.channel, a.message) for a in answers])
        self.answered += metrics.worker_answered(a.message["frame"] for a in answers)
        if unsent:
            metrics.WORKER_UNSENT.inc(unsent)

    def describe(self) -> dict[str, Any]:
        """What the heartbeat publishes about this worker (presence.Heartbeat calls it every
        beat, from its thread): the model, the device, and the answers so far and per second
        over the last beats."""
        predictor = self.model.predictor
        return {
            "model": predictor.version,
            "device": str(predictor.device),
            "answers": self.answered,
            "answers_per_second": round(self._rate.rate(self.answered), 2),
        }


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
    preprocess_threads: int = 1,
    direct_replies: bool = True,
) -> WorkerState:
    """Load the model once for this process; raise `WorkerStartError` saying why it cannot.

    `torch_threads` > 0 caps PyTorch's CPU threads for this process (0 keeps its default);
    `preprocess_threads` > 1 decodes and preprocesses a batch's images on that many threads;
    `direct_replies` sends a batch's answers in one script call (classifier.transport.replies).
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
            pool = None
            if preprocess_threads > 1:
                pool = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="digits-prep")
            sender = ReplySender(timeout=send_timeout, direct=direct_replies)
            _state = WorkerState(model, sender, pool)
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
            if _state.pool is not None:
                _state.pool.shutdown()
            _state = None
