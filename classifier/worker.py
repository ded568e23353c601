"""The inference worker's per-process state: the model, and the road back to the websockets.

A Celery worker serving the inference queue runs one process with the solo pool (nothing forks
after CUDA is initialised). `start()` runs once as the process starts: it loads and warms up the
model, and fails the start with a clear message when the weights are missing or bad. `serve()`
answers one batch of requests (celery-batches hands them over together) with one model call, and
sends each answer straight to the consumer that asked, through the channel layer
(`ReplySender`: one Redis round trip per batch).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer

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


# `RedisChannelLayer.send` for many messages at once: the same four commands per message (drop
# expired messages, count them against the capacity, add, set the expiry), for every message of
# a batch in one script call, as the layer's own `group_send` does. KEYS: the channels' keys.
# ARGV: now, expiry, then message and capacity per key. Returns 1 for each message refused
# because its channel is full, else 0.
SEND_MANY_SCRIPT = """
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local full = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(now) - expiry)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[2 + 2 * i]) then
        redis.call('ZADD', KEYS[i], ARGV[1], ARGV[1 + 2 * i])
        redis.call('EXPIRE', KEYS[i], expiry)
        full[i] = 0
    else
        full[i] = 1
    end
end
return full
"""


class ReplySender:
    """Sends the worker's answers through the channel layer, from the worker's own thread.

    With channels_redis (what the service runs) the answers of a batch go to Redis in one
    script call per Redis host, over a blocking redis-py client: the keys, serialisation and
    capacity check are the layer's, only the round trips are fewer. The layer's own `send` is
    asyncio code awaiting four round trips per message; run on an event loop in a helper thread,
    it cost 1.8 ms of CPU and 4.7 ms of waiting per lone answer on a busy 2-core machine (two
    thread hand-offs and four trips to Redis), against one trip now (benchmarks/load.py).

    Any other layer is sent to through its `send`, on one event loop that lives in a background
    thread for the life of the process: each `async_to_sync` call would run a fresh loop, and
    channels_redis keeps its connections per loop, so that leaks connections and pays a connect
    per answer (channels_redis issues #125, #332).
    """

    def __init__(self, layer: BaseChannelLayer | None = None, timeout: float = 5.0) -> None:
        self.layer = layer if layer is not None else get_channel_layer()
        if self.layer is None:
            raise RuntimeError("No channel layer is configured (settings.CHANNEL_LAYERS).")
        self.timeout = timeout
        self._clients: dict[int, redis.Redis] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Sentinel-managed hosts need the layer's own connection logic.
        self._direct = isinstance(self.layer, RedisChannelLayer) and not any(
            "master_name" in host for host in self.layer.hosts
        )
        if not self._direct:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="digits-replies", daemon=True
            )
            self._thread.start()

    def send(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """Send (channel, message) pairs; return how many could not be sent.

        Waits for the sends, so a worker never runs ahead of a Redis it cannot reach. A message
        that cannot be sent is logged and dropped: its client gets a `timeout` error instead.
        """
        if not messages:
            return 0
        results = self._send_direct(messages) if self._direct else self._send_async(messages)
        failed = 0
        for (channel, _), result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                if isinstance(result, ChannelFull):
                    logger.warning("Channel %s is full; answer dropped", channel)
                else:
                    logger.error("Answer to %s not sent: %r", channel, result)
        return failed

    def _send_direct(
        self, messages: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[BaseException | None]:
        layer = self.layer
        assert isinstance(layer, RedisChannelLayer)
        by_host: dict[int, list[int]] = {}
        keys: list[str] = []
        args: list[tuple[bytes, int]] = []
        for position, (channel, message) in enumerate(messages):
            non_local = layer.non_local_name(channel)
            if non_local != channel:  # a process-local channel: the receiver dispatches on this
                message = {**message, "__asgi_channel__": channel}
            by_host.setdefault(layer.consistent_hash(non_local), []).append(position)
            keys.append(layer.prefix + non_local)
            args.append((layer.serialize(message), layer.get_capacity(channel)))
        results: list[BaseException | None] = [None] * len(messages)
        for host, positions in by_host.items():
            argv: list[Any] = [time.time(), int(layer.expiry)]
            for position in positions:
                argv.extend(args[position])
            try:
                full = self._client(host).eval(
                    SEND_MANY_SCRIPT, len(positions), *(keys[p] for p in positions), *argv
                )
            except redis.RedisError as exc:  # every answer to this host is lost
                for position in positions:
                    results[position] = exc
                continue
            for position, refused in zip(positions, full, strict=True):
                if refused:
                    results[position] = ChannelFull()
        return results

    def _client(self, host: int) -> redis.Redis:
        client = self._clients.get(host)
        if client is None:
            assert isinstance(self.layer, RedisChannelLayer)
            options = {**self.layer.hosts[host], "socket_timeout": self.timeout}
            address = options.pop("address", None)
            client = redis.Redis.from_url(address, **options) if address else redis.Redis(**options)
            self._clients[host] = client
        return client

    def _send_async(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        assert self._loop is not None

        async def send_all() -> list[Any]:
            return await asyncio.gather(
                *(self.layer.send(channel, message) for channel, message in messages),
                return_exceptions=True,
            )

        future = asyncio.run_coroutine_threadsafe(send_all(), self._loop)
        try:
            return future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            logger.error("Sending %d answers took over %.1f s", len(messages), self.timeout)
            return [exc] * len(messages)

    def close(self, timeout: float = 5.0) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._loop is None or not self._loop.is_running():
            return
        close_pools = getattr(self.layer, "close_pools", None)
        if close_pools is not None:
            try:
                asyncio.run_coroutine_threadsafe(close_pools(), self._loop).result(timeout)
            except Exception:
                logger.debug("Closing the channel layer's connections failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
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


def prepare_batch(payloads: Sequence[str], pool: Executor | None = None) -> list[Prepared]:
    """`prepare` every payload of a batch, in order; across `pool`'s threads when given.

    Pillow decodes and resizes, and numpy computes, with the GIL released for much of the
    work, so on a machine with cores to spare (a GPU host) threads shorten a batch's
    preprocessing, which then no longer dwarfs the model call. On a busy 2-core machine they
    did not pay (benchmarks/inference_speed.py), hence DIGITS_PREPROCESS_THREADS=1 by default.
    """
    if pool is None or len(payloads) < 2:
        return [prepare(payload) for payload in payloads]
    return list(pool.map(prepare, payloads))


def answer_batch(
    items: Sequence[Mapping[str, Any]],
    predictor: Predictor,
    now: Callable[[], float] = time.time,
    pool: Executor | None = None,
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
    prepared_all = prepare_batch([i["image"] for i in live], pool)
    for item, prepared in zip(live, prepared_all, strict=True):
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

    def __init__(
        self, model: ModelHolder, sender: ReplySender, pool: ThreadPoolExecutor | None = None
    ) -> None:
        self.model = model
        self.sender = sender
        self.pool = pool  # preprocessing threads, when DIGITS_PREPROCESS_THREADS > 1

    def serve(self, items: Sequence[Mapping[str, Any]]) -> None:
        answers = answer_batch(items, self.model.current(), pool=self.pool)
        self.sender.send([(a.channel, a.message) for a in answers])


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
) -> WorkerState:
    """Load the model once for this process; raise `WorkerStartError` saying why it cannot.

    `torch_threads` > 0 caps PyTorch's CPU threads for this process (0 keeps its default);
    `preprocess_threads` > 1 decodes and preprocesses a batch's images on that many threads.
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
            _state = WorkerState(model, ReplySender(timeout=send_timeout), pool)
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
