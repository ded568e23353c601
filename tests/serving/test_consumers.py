"""The consumer's rules, in this process: `PredictConsumer` driven through Channels'
`WebsocketCommunicator`, one rule a test.

Everything is real but the publish: the channel layer is the service's own
(`ResilientRedisChannelLayer`) on a real Redis with a prefix of the test's own, worker presence
is read from real heartbeats (`presence.Heartbeat`) on a queue of the test's own, and answers
travel as a worker sends them (a `RedisChannelLayer` sending `protocol.answer_message` to the
consumer's channel). The publish seam (`PredictConsumer.queue_request`) is replaced with a queue
the test reads, so the test decides when, whether and what a request is answered with.

What only real processes show (the web server's limits and its 403, a worker's answers, faults
of real processes) is in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import itertools
import json
import queue
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer

from classifier.management.devstack import EmbeddedRedis
from classifier.serving import enqueue, metrics, presence, protocol
from classifier.serving.consumers import PredictConsumer
from classifier.serving.presence import Heartbeat, registry_key
from classifier.serving.protocol import PREDICT_PATH, Request
from classifier.serving.routing import websocket_urlpatterns
from tests.catalogue import BAD_FRAMES, HOSTILE_IMAGES, digit_png
from tests.helpers import blank_png, data_url, predict_frame

T = TypeVar("T")

# How long a test waits for something that should happen at once.
PROMPTLY = 5.0
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


# --- The publish seam: a queue the test reads ---------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """One call of the publish seam: what `enqueue.submit` would have sent to the workers."""

    request: Request
    reply_channel: str
    ticket: int
    deadline: float
    at: float  # time.time() of the call
    client_hash: str = ""

    def task_kwargs(self) -> dict[str, Any]:
        """The task's kwargs, as `classifier.serving.enqueue.submit` builds them."""
        return enqueue.task_kwargs(
            self.request, self.reply_channel, self.ticket, self.deadline, self.client_hash, self.at
        )


class Published:
    """Stands in for the broker at `PredictConsumer.queue_request`: records every call, or raises
    `failure` for the next `failures` calls."""

    def __init__(self) -> None:
        self._calls: queue.Queue[Queued] = queue.Queue()
        self.failure: Exception | None = None
        self.failures = 0

    async def __call__(
        self,
        request: Request,
        reply_channel: str,
        ticket: int,
        deadline: float,
        client_hash: str,
    ) -> None:
        if self.failures > 0 and self.failure is not None:
            self.failures -= 1
            raise self.failure
        self._calls.put(Queued(request, reply_channel, ticket, deadline, time.time(), client_hash))

    async def next(self, timeout: float = PROMPTLY) -> Queued:
        """The next request queued; fails the test if none comes within `timeout`."""
        try:
            return await asyncio.to_thread(self._calls.get, True, timeout)
        except queue.Empty:
            raise AssertionError(f"nothing was queued within {timeout} s") from None

    def taken(self) -> list[Queued]:
        """Everything queued and not yet read, without waiting."""
        calls = []
        while not self._calls.empty():
            calls.append(self._calls.get_nowait())
        return calls


# --- A socket in this process ---------------------------------------------------------------------

_ports = itertools.count(40000)


class Socket:
    """One websocket to an ASGI application, from `address` (the scope's `client`)."""

    def __init__(
        self, application: Any, address: str = "127.0.0.1", origin: bytes | None = ORIGIN[1]
    ) -> None:
        headers = [(b"origin", origin)] if origin is not None else []
        self.communicator = WebsocketCommunicator(application, "/" + PREDICT_PATH, headers)
        self.communicator.scope["client"] = (address, next(_ports))

    async def connect(self) -> bool:
        connected, _ = await self.communicator.connect(timeout=PROMPTLY)
        return connected

    async def __aenter__(self) -> Socket:
        assert await self.connect(), "the socket was refused"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.communicator.disconnect(timeout=PROMPTLY)

    async def send(self, frame: str | bytes) -> None:
        """Any websocket message, the empty text frame included."""
        key = "text" if isinstance(frame, str) else "bytes"
        await self.communicator.send_input({"type": "websocket.receive", key: frame})

    async def predict(self, request_id: str, image: bytes | None = None) -> None:
        await self.send(predict_frame(request_id, image if image is not None else digit_png(7)))

    async def feedback(self, request_id: str, digit: Any = 7, **fields: Any) -> None:
        """A correction: `digit` was drawn (the image is a drawn 7 unless `image` is given)."""
        image = fields.pop("image", None)
        frame = {
            "type": protocol.FEEDBACK,
            "id": request_id,
            "image": data_url(image if image is not None else digit_png(7)),
            "digit": digit,
            **fields,
        }
        await self.send(json.dumps(frame))

    async def receive(self, timeout: float = PROMPTLY) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout))

    async def silent(self, seconds: float) -> bool:
        """True when nothing at all arrives for `seconds`."""
        return await self.communicator.receive_nothing(timeout=seconds)

    async def closed_with(self, timeout: float = PROMPTLY) -> int | None:
        """The close code, when the server closes the socket next."""
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "websocket.close", message
        return message.get("code")


# --- The service around the consumer ---------------------------------------------------------


class Service:
    """The consumer with its publish seam replaced, on this test's Redis names, and a worker's
    way of answering."""

    def __init__(self, redis_url: str, tag: str) -> None:
        self.redis_url = redis_url
        self.queue = f"test-consumer-{tag}"
        self.prefix = f"test-consumer-{tag}"
        self.layer_url = redis_url
        self.published = Published()
        published = self.published

        class Consumer(PredictConsumer):
            queue_request = staticmethod(published)

        self.application = Consumer.as_asgi()
        self._worker_layer: RedisChannelLayer | None = None
        self._heartbeats: list[Heartbeat] = []

    def layer_config(self, settings: Any) -> dict[str, Any]:
        """The service's channel layer as settings.py configures it, on this test's Redis and
        prefix (its ResilientRedisChannelLayer, whatever DIGITS_TRANSPORT says)."""
        config = copy.deepcopy(settings.CHANNEL_LAYERS)
        config["default"]["BACKEND"] = (
            "classifier.transport.channel_layer.ResilientRedisChannelLayer"
        )
        config["default"]["CONFIG"]["hosts"][0]["address"] = self.layer_url
        config["default"]["CONFIG"]["prefix"] = self.prefix
        return config

    def socket(self, address: str = "127.0.0.1") -> Socket:
        return Socket(self.application, address)

    def start_worker(self) -> Heartbeat:
        """A live worker, as the web side sees one: a real heartbeat on this test's queue."""
        heartbeat = Heartbeat(
            self.redis_url, self.queue, f"worker-{uuid.uuid4().hex[:6]}", lambda: {}, 0.5, 2.0
        )
        heartbeat.start()
        self._heartbeats.append(heartbeat)
        return heartbeat

    async def answer(self, queued: Queued, frame: dict[str, Any]) -> None:
        """Send `frame` as the worker does: to the consumer's channel, with its ticket."""
        await self.send(queued.reply_channel, protocol.answer_message(queued.ticket, frame))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """A channel-layer message from a worker process (plain channels_redis, as there)."""
        if self._worker_layer is None:
            self._worker_layer = RedisChannelLayer(hosts=[self.layer_url], prefix=self.prefix)
        await self._worker_layer.send(channel, message)

    async def close_clients(self) -> None:
        """Close what this event loop opened: the layers' and the presence reader's clients."""
        if self._worker_layer is not None:
            await self._worker_layer.close_pools()
            self._worker_layer = None
        layer = get_channel_layer()
        if isinstance(layer, RedisChannelLayer):
            await layer.close_pools()
        client = presence.from_settings()._client
        if client is not None:
            await client.aclose()

    def stop(self) -> None:
        for heartbeat in self._heartbeats:
            heartbeat.stop()
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.delete(registry_key(self.queue))
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        """Run `scenario` on a fresh event loop, as uvicorn runs a consumer."""

        async def main() -> T:
            try:
                return await scenario()
            finally:
                await self.close_clients()

        return asyncio.run(main())


@pytest.fixture
def service(settings: Any, redis_url: str) -> Iterator[Service]:
    """The consumer on names of this test's own, with the abuse limits off and a deadline far
    away; each test sets what its rule needs."""
    service = Service(redis_url, uuid.uuid4().hex[:10])
    settings.REDIS_URL = redis_url
    settings.DIGITS_INFERENCE_QUEUE = service.queue
    settings.CHANNEL_LAYERS = service.layer_config(settings)
    settings.DIGITS_RATE_LIMIT = 0
    settings.DIGITS_MAX_IN_FLIGHT = 1000
    settings.DIGITS_MAX_CONNECTIONS_PER_CLIENT = 0
    settings.DIGITS_REQUEST_TIMEOUT = 30.0
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def worker(service: Service) -> Heartbeat:
    """A worker is alive (its heartbeat is in Redis)."""
    return service.start_worker()


def prediction(request_id: str, digit: int = 3) -> dict[str, Any]:
    """A prediction frame as a worker builds it."""
    probabilities = [0.01] * 10
    probabilities[digit] = 0.91
    timings = {"queue": 1.5, "preprocess": 0.5, "inference": 2.0, "worker": 4.0}
    return protocol.prediction(
        request_id, probabilities, "test-model", "data:image/png;base64,AA==", timings, batch=2
    )


def fresh_address() -> str:
    """A client address no other test uses (the per-address count is the process's)."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


# --- Frames ----------------------------------------------------------------------------------


def test_every_bad_frame_is_answered_with_its_code_and_id_and_the_socket_stays_open(
    service: Service, worker: Heartbeat
) -> None:
    """The whole catalogue of bad frames (tests/catalogue.py) on one socket: each is answered
    at once with its code and the id it named, nothing is queued, and the socket then takes a
    good request."""

    async def scenario() -> tuple[list[dict[str, Any]], list[Queued], Queued]:
        async with service.socket() as socket:
            answers = []
            for bad in BAD_FRAMES:
                await socket.send(bad.frame)
                answers.append(await socket.receive())
            refused_and_queued = service.published.taken()
            await socket.predict("good")
            return answers, refused_and_queued, await service.published.next()

    answers, queued_while_refusing, good = service.run(scenario)
    for answer, bad in zip(answers, BAD_FRAMES, strict=True):
        assert answer["type"] == protocol.ERROR, (bad.name, answer)
        assert (answer["code"], answer["id"]) == (bad.code, bad.request_id), (bad.name, answer)
        assert answer["message"].endswith("."), (bad.name, answer)
    assert queued_while_refusing == []
    assert good.request.id == "good"


def test_a_binary_frame_is_refused_and_the_socket_stays_open(
    service: Service, worker: Heartbeat
) -> None:
    """A client sending the image itself as a binary message is told the protocol is JSON text;
    the same socket then takes a text frame."""

    async def scenario() -> tuple[dict[str, Any], Queued]:
        async with service.socket() as socket:
            await socket.send(digit_png(5))
            refused = await socket.receive()
            await socket.predict("text")
            return refused, await service.published.next()

    refused, queued = service.run(scenario)
    assert (refused["type"], refused["code"], refused["id"]) == (
        protocol.ERROR,
        protocol.BINARY_FRAME,
        None,
    )
    assert "JSON text" in refused["message"]
    assert queued.request.id == "text"


def test_hostile_images_pass_the_consumer_unopened_and_get_the_workers_answers(
    service: Service, worker: Heartbeat
) -> None:
    """The consumer never decodes an image (it runs on the event loop): every hostile image
    of the catalogue is queued as sent, and the worker's batch code (`answer_batch`, which
    refuses them all before the model) answers each with its code through the consumer."""
    # The worker's code, imported here: it loads torch, which no other test here needs.
    from classifier.serving.batch import answer_batch

    class NoModel:
        def predict_scored(self, images: Any) -> Any:
            raise AssertionError("a hostile image reached the model")

    async def scenario() -> tuple[list[Queued], dict[str, dict[str, Any]]]:
        async with service.socket() as socket:
            for hostile in HOSTILE_IMAGES:
                await socket.predict(hostile.name, hostile.data)
            queued = [await service.published.next() for _ in HOSTILE_IMAGES]
            sent = answer_batch([q.task_kwargs() for q in queued], NoModel())  # type: ignore[arg-type]
            for answer in sent:
                await service.send(answer.channel, answer.message)
            answers = {}
            for _ in HOSTILE_IMAGES:
                answer = await socket.receive()
                answers[answer["id"]] = answer
            return queued, answers

    queued, answers = service.run(scenario)
    assert [q.request.id for q in queued] == [h.name for h in HOSTILE_IMAGES]
    for q, hostile in zip(queued, HOSTILE_IMAGES, strict=True):
        assert q.request.image == data_url(hostile.data).split(",", 1)[1], hostile.name
        answer = answers[hostile.name]
        assert answer["type"] == protocol.ERROR, answer
        assert hostile.accepts(answer["code"]), (hostile.name, answer)


# --- Numbers ------------------------------------------------------------------------------------


def test_a_number_request_is_queued_with_its_expect_and_its_answer_forwarded(
    service: Service, worker: Heartbeat
) -> None:
    """ "expect": "number" travels to the worker in the task's kwargs (a digit's kwargs stay as
    they were), the worker's number answer comes back unchanged but for the server's time, and
    an unknown `expect` is refused at once, never queued."""
    answer = protocol.number_prediction(
        "year",
        [protocol.number_digit([0.0] * 9 + [1.0], (1, 2, 3, 4), "data:,", True)],
        "test-model",
        {"worker": 1.0},
    )

    async def scenario() -> tuple[Queued, Queued, dict[str, Any], dict[str, Any], bool]:
        async with service.socket() as socket:
            image = data_url(digit_png(9))
            await socket.send(
                json.dumps({"type": "predict", "id": "year", "image": image, "expect": "number"})
            )
            number = await service.published.next()
            await socket.predict("digit")
            digit = await service.published.next()
            await service.answer(number, answer)
            forwarded = await socket.receive()
            await socket.send(
                json.dumps({"type": "predict", "id": "odd", "image": image, "expect": "words"})
            )
            refused = await socket.receive()
            return number, digit, forwarded, refused, not service.published.taken()

    number, digit, forwarded, refused, nothing_else = service.run(scenario)
    assert number.task_kwargs()["expect"] == protocol.EXPECT_NUMBER
    assert "expect" not in digit.task_kwargs()
    assert forwarded["number"] == "9" and forwarded["digits"] == answer["digits"]
    assert "server" in forwarded["timings_ms"]
    assert (refused["code"], refused["id"]) == (protocol.BAD_FRAME, "odd")
    assert nothing_else


# --- Feedback -----------------------------------------------------------------------------------


def test_a_feedback_frame_is_queued_like_a_predict_with_its_label_and_answered_once(
    service: Service, worker: Heartbeat
) -> None:
    """A correction takes the predict's path: queued (with its kind, label, what the client was
    told and the client's hash) to the same workers, the worker's `feedback_saved` forwarded
    unchanged, a second answer dropped. It is counted as its own outcome."""
    counted = metrics.WEB_REGISTRY.get_sample_value(
        "digits_requests_total", {"outcome": protocol.FEEDBACK_SAVED}
    )
    saved = protocol.feedback_saved("fix", duplicate=False)

    async def scenario() -> tuple[Queued, Queued, dict[str, Any], bool]:
        async with service.socket() as socket:
            await socket.predict("guess")
            await socket.feedback("fix", 7, predicted=1, model="test-model")
            guess, fix = await service.published.next(), await service.published.next()
            await service.answer(fix, saved)
            answer = await socket.receive()
            await service.answer(fix, protocol.feedback_saved("fix", duplicate=True))  # again
            return guess, fix, answer, await socket.silent(0.5)

    guess, fix, answer, silent = service.run(scenario)
    assert isinstance(fix.request, protocol.FeedbackRequest)
    assert guess.task_kwargs()["kind"] == protocol.PREDICT
    kwargs = fix.task_kwargs()
    assert kwargs["kind"] == protocol.FEEDBACK
    assert (kwargs["label"], kwargs["client_predicted"], kwargs["client_model"]) == (
        7,
        1,
        "test-model",
    )
    assert kwargs["image"] == data_url(digit_png(7)).split(",", 1)[1]
    assert kwargs["media_type"] == "image/png"
    assert kwargs["client_hash"] == fix.client_hash
    assert fix.reply_channel == guess.reply_channel and fix.ticket != guess.ticket
    assert answer == saved
    assert silent
    after = metrics.WEB_REGISTRY.get_sample_value(
        "digits_requests_total", {"outcome": protocol.FEEDBACK_SAVED}
    )
    assert after == (counted or 0) + 1


def test_the_client_hash_is_a_salted_sha256_of_the_address_never_the_address(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """64 hex digits; the same for two sockets of one address, another for another address,
    and another again under another salt (so it cannot be looked up without the salt)."""
    address, other = fresh_address(), fresh_address()

    async def hashes() -> list[str]:
        found = []
        for n, source in enumerate([address, address, other]):
            async with service.socket(source) as socket:
                await socket.feedback(f"f{n}", 3, image=digit_png(3))
                found.append((await service.published.next()).client_hash)
        return found

    first, again, elsewhere = service.run(hashes)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert address not in first
    assert first == again
    assert elsewhere != first
    settings.DIGITS_FEEDBACK_SALT = "another salt"
    assert service.run(hashes)[0] != first


def test_feedback_is_refused_as_a_predict_is_and_a_bad_label_is_never_queued(
    service: Service, worker: Heartbeat
) -> None:
    """Labels that are not integers 0-9 (10, the string "7", true) are refused at once with
    `bad_label` and the request's id; nothing is queued. (A blank image is the worker's to
    find: `empty`, tests/serving/test_batch.py.)"""

    async def scenario() -> tuple[list[dict[str, Any]], list[Queued]]:
        async with service.socket() as socket:
            await socket.feedback("ten", 10)
            await socket.feedback("text", "7")
            await socket.feedback("yes", True)
            answers = [await socket.receive() for _ in range(3)]
            return answers, service.published.taken()

    answers, queued = service.run(scenario)
    assert [(a["id"], a["code"]) for a in answers] == [
        ("ten", protocol.BAD_LABEL),
        ("text", protocol.BAD_LABEL),
        ("yes", protocol.BAD_LABEL),
    ]
    assert queued == []


# --- Abuse limits ---------------------------------------------------------------------------


def test_a_flood_of_requests_is_refused_over_the_burst_and_served_once_the_bucket_refills(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """A token bucket per socket, 1 a second with bursts of 4: of 8 requests sent at once the
    first 4 are queued and the rest refused with `rate_limited` (never queued); a second later
    the same socket is served again."""
    settings.DIGITS_RATE_LIMIT = 1
    settings.DIGITS_RATE_BURST = 4

    async def scenario() -> tuple[list[dict[str, Any]], list[Queued], Queued]:
        async with service.socket() as socket:
            for k in range(8):
                await socket.predict(f"r{k}")
            refused = [await socket.receive() for _ in range(4)]
            queued = [await service.published.next() for _ in range(4)]
            assert await socket.silent(0.1)
            await asyncio.sleep(1.2)  # a token back
            await socket.predict("later")
            return refused, queued, await service.published.next()

    refused, queued, later = service.run(scenario)
    assert [q.request.id for q in queued] == ["r0", "r1", "r2", "r3"]
    assert [a["id"] for a in refused] == ["r4", "r5", "r6", "r7"]
    assert {a["code"] for a in refused} == {protocol.RATE_LIMITED}
    assert "1 a second" in refused[0]["message"] and "bursts of 4" in refused[0]["message"]
    assert later.request.id == "later"


def test_a_malformed_frame_takes_a_token_too(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """A flood of garbage costs as much as a flood of requests: the first four bad frames are
    answered with their own error and spend the burst; the bad frames after them, and the good
    request after those, are refused with `rate_limited`."""
    settings.DIGITS_RATE_LIMIT = 1
    settings.DIGITS_RATE_BURST = 4

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], list[Queued]]:
        async with service.socket() as socket:
            for _ in range(6):
                await socket.send("not json")
            bad = [await socket.receive() for _ in range(6)]
            await socket.predict("after-garbage")
            return bad, await socket.receive(), service.published.taken()

    bad, refused, queued = service.run(scenario)
    assert [a["code"] for a in bad] == [protocol.BAD_JSON] * 4 + [protocol.RATE_LIMITED] * 2
    assert [a["id"] for a in bad] == [None] * 6
    assert (refused["id"], refused["code"]) == ("after-garbage", protocol.RATE_LIMITED)
    assert queued == []


def test_requests_over_the_in_flight_cap_are_refused_not_queued(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """Two requests in flight (the cap): a third is refused at once with `rate_limited`,
    saying why; once one is answered the socket takes another."""
    settings.DIGITS_MAX_IN_FLIGHT = 2

    async def scenario() -> tuple[list[Queued], dict[str, Any], list[dict[str, Any]], Queued]:
        async with service.socket() as socket:
            for request_id in ("a", "b", "c"):
                await socket.predict(request_id)
            refused = await socket.receive()
            queued = [await service.published.next() for _ in range(2)]
            assert service.published.taken() == []
            await service.answer(queued[0], prediction("a"))
            answered = [await socket.receive()]
            await socket.predict("d")
            d = await service.published.next()
            await service.answer(queued[1], prediction("b"))
            await service.answer(d, prediction("d"))
            answered += [await socket.receive(), await socket.receive()]
            return queued, refused, answered, d

    queued, refused, answered, d = service.run(scenario)
    assert [q.request.id for q in queued] == ["a", "b"]
    assert (refused["id"], refused["code"]) == ("c", protocol.RATE_LIMITED)
    assert "in flight" in refused["message"] and "limit is 2" in refused["message"]
    assert d.request.id == "d"
    assert [(a["id"], a["type"]) for a in answered] == [
        ("a", protocol.PREDICTION),
        ("b", protocol.PREDICTION),
        ("d", protocol.PREDICTION),
    ]


def test_too_many_sockets_from_one_address_are_told_and_closed_until_one_closes(
    service: Service, settings: Any
) -> None:
    """Three sockets open from one address (the cap): a fourth is accepted only to be told
    `too_many_connections` (with no id) and closed with 4429, and frames on it go unanswered;
    another address is not affected; once one of the three closes, a new socket is served."""
    settings.DIGITS_MAX_CONNECTIONS_PER_CLIENT = 3
    address, other = fresh_address(), fresh_address()

    async def served(socket: Socket) -> bool:
        await socket.send("not json")  # a refused socket answers nothing
        return (await socket.receive())["code"] == protocol.BAD_JSON

    async def scenario() -> tuple[list[bool], dict[str, Any], int | None, bool, bool, bool]:
        first = [service.socket(address) for _ in range(3)]
        for socket in first:
            assert await socket.connect()
        first_served = [await served(socket) for socket in first]

        fourth = service.socket(address)
        assert await fourth.connect()  # accepted, so that it can be told why it is closed
        told = await fourth.receive()
        code = await fourth.closed_with()
        await fourth.send("not json")
        fourth_silent = await fourth.silent(0.2)
        await fourth.close()

        async with service.socket(other) as elsewhere:
            other_served = await served(elsewhere)

        await first[0].close()
        async with service.socket(address) as replacement:
            replacement_served = await served(replacement)
        for socket in first[1:]:
            await socket.close()
        return first_served, told, code, fourth_silent, other_served, replacement_served

    first_served, told, code, fourth_silent, other_served, replacement_served = service.run(
        scenario
    )
    assert first_served == [True] * 3
    assert (told["type"], told["code"], told["id"]) == (
        protocol.ERROR,
        protocol.TOO_MANY_CONNECTIONS,
        None,
    )
    assert "limit is 3" in told["message"]
    assert code == protocol.CLOSE_TOO_MANY_CONNECTIONS
    assert fourth_silent
    assert other_served
    assert replacement_served


ALLOWED_HOSTS = ["127.0.0.1", "digits.example"]
# The origin tests are about the handshake alone, so their sockets live a millisecond: Channels'
# in-memory layer serves them. (A Redis layer's reader cancelled while it is still connecting
# swallows the cancellation on Python 3.11 and blocks its BZPOPMIN out: 5 s per test.)
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("http://digits.example", True),
        ("https://digits.example", True),
        ("http://127.0.0.1:8000", True),
        ("http://evil.example", False),
        ("http://digits.example.evil.example", False),
        ("null", False),
        (None, False),  # no Origin header: non-browser clients must send one
    ],
)
def test_only_pages_from_allowed_hosts_may_connect(
    service: Service, settings: Any, origin: str | None, accepted: bool
) -> None:
    """The websocket's origin check as digits_site/asgi.py builds it, with ALLOWED_HOSTS as
    DIGITS_ALLOWED_HOSTS=127.0.0.1,digits.example sets it."""
    settings.ALLOWED_HOSTS = ALLOWED_HOSTS
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    application = AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns))

    async def scenario() -> bool:
        header = origin.encode() if origin is not None else None
        socket = Socket(application, fresh_address(), origin=header)
        connected = await socket.connect()
        if connected:
            await socket.close()
        return connected

    assert service.run(scenario) is accepted


# Whitenoise, built with the site's HTTP application, warns that `collectstatic` never ran.
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_the_sites_application_routes_the_socket_and_checks_its_origin(
    service: Service, settings: Any
) -> None:
    """digits_site.asgi's application, as uvicorn serves it: a page of an allowed host reaches
    the consumer at /ws/predict/; another origin is refused (uvicorn answers that refusal
    with 403: tests/e2e/test_service.py)."""
    settings.SECRET_KEY_FROM_ENV = True  # what DIGITS_SECRET_KEY gives a production server
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    application = importlib.import_module("digits_site.asgi").application
    plain = [host for host in settings.ALLOWED_HOSTS if not host.startswith((".", "*", "["))]
    if not plain:
        pytest.skip(f"no plain host name in ALLOWED_HOSTS: {settings.ALLOWED_HOSTS}")
    allowed = plain[0]

    async def scenario() -> tuple[dict[str, Any], bool]:
        good = Socket(application, fresh_address(), origin=f"http://{allowed}:8000".encode())
        async with good:
            await good.send("not json")
            answer = await good.receive()
        evil = Socket(application, fresh_address(), origin=b"http://evil.example")
        return answer, await evil.connect()

    answer, evil_connected = service.run(scenario)
    assert answer["code"] == protocol.BAD_JSON
    assert not evil_connected


def test_a_feedback_frame_takes_a_token_and_counts_in_flight(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """Corrections are no way around the limits: with bursts of 3, a predict and two feedback
    frames spend the bucket and the next feedback is refused `rate_limited`; with two in flight
    (the cap), a feedback frame is refused too."""
    settings.DIGITS_RATE_LIMIT = 0.01
    settings.DIGITS_RATE_BURST = 3
    settings.DIGITS_MAX_IN_FLIGHT = 10

    async def bucket() -> tuple[dict[str, Any], list[Queued]]:
        async with service.socket() as socket:
            await socket.predict("p")
            await socket.feedback("f1")
            await socket.feedback("f2")
            await socket.feedback("f3")
            refused = await socket.receive()
            return refused, [await service.published.next() for _ in range(3)]

    refused, queued = service.run(bucket)
    assert (refused["id"], refused["code"]) == ("f3", protocol.RATE_LIMITED)
    assert [q.request.id for q in queued] == ["p", "f1", "f2"]

    settings.DIGITS_RATE_LIMIT = 0
    settings.DIGITS_MAX_IN_FLIGHT = 2

    async def in_flight() -> dict[str, Any]:
        async with service.socket() as socket:
            await socket.predict("p")
            await socket.feedback("f1")
            await socket.feedback("f2")
            return await socket.receive()

    refused = service.run(in_flight)
    assert (refused["id"], refused["code"]) == ("f2", protocol.RATE_LIMITED)
    assert "in flight" in refused["message"]


# --- Workers, deadlines and answers -----------------------------------------------------------


def test_with_no_worker_alive_a_request_is_answered_unavailable_and_never_queued(
    service: Service, settings: Any
) -> None:
    """No heartbeat on the queue: the request is refused at once with `unavailable` instead of
    waiting out its deadline. Once a worker beats (and the cached view expires), the next
    request is queued."""

    async def scenario() -> tuple[dict[str, Any], list[Queued], Queued]:
        async with service.socket() as socket:
            await socket.predict("nobody")
            refused = await socket.receive()
            queued_meanwhile = service.published.taken()
            service.start_worker()
            await asyncio.sleep(settings.DIGITS_PRESENCE_CACHE + 0.1)
            await socket.predict("somebody")
            return refused, queued_meanwhile, await service.published.next()

    refused, queued_meanwhile, queued = service.run(scenario)
    assert (refused["type"], refused["id"], refused["code"]) == (
        protocol.ERROR,
        "nobody",
        protocol.UNAVAILABLE,
    )
    assert "No model worker" in refused["message"]
    assert queued_meanwhile == []
    assert queued.request.id == "somebody"


def test_a_request_that_cannot_be_queued_is_answered_unavailable_once(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """Publishing fails (Redis refused the connection): the client is told `unavailable` at
    once, and that request is over: no `timeout` follows at its deadline. The socket then
    queues the next request."""
    settings.DIGITS_REQUEST_TIMEOUT = 0.3
    service.published.failure = redis.ConnectionError("Connection refused")
    service.published.failures = 1

    async def scenario() -> tuple[dict[str, Any], bool, Queued]:
        async with service.socket() as socket:
            await socket.predict("unlucky")
            refused = await socket.receive()
            nothing_more = await socket.silent(0.8)  # well past its deadline
            settings.DIGITS_REQUEST_TIMEOUT = 30.0
            await socket.predict("lucky")
            return refused, nothing_more, await service.published.next()

    refused, nothing_more, queued = service.run(scenario)
    assert (refused["id"], refused["code"]) == ("unlucky", protocol.UNAVAILABLE)
    assert "could not take the request" in refused["message"]
    assert nothing_more
    assert queued.request.id == "lucky"


def test_no_answer_by_the_deadline_is_a_timeout_and_a_late_answer_is_dropped(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """A request nobody answers (a hung worker, a message lost in Redis) gets a `timeout` at
    DIGITS_REQUEST_TIMEOUT; the deadline it was queued with is that same moment (the worker
    drops it after that: tests/serving/test_worker.py); the answer arriving after it is dropped,
    so the client hears exactly once. The socket keeps serving."""
    settings.DIGITS_REQUEST_TIMEOUT = 0.3

    async def scenario() -> tuple[Queued, dict[str, Any], float, bool, dict[str, Any]]:
        async with service.socket() as socket:
            sent = time.monotonic()
            await socket.predict("slow")
            queued = await service.published.next()
            answer = await socket.receive()
            waited = time.monotonic() - sent
            await service.answer(queued, prediction("slow"))  # too late
            dropped = await socket.silent(1.0)
            settings.DIGITS_REQUEST_TIMEOUT = 30.0
            await socket.predict("next")
            await service.answer(await service.published.next(), prediction("next"))
            return queued, answer, waited, dropped, await socket.receive()

    queued, answer, waited, dropped, after = service.run(scenario)
    assert queued.deadline == pytest.approx(queued.at + 0.3, abs=0.2)
    assert (answer["type"], answer["id"], answer["code"]) == (
        protocol.ERROR,
        "slow",
        protocol.TIMEOUT,
    )
    assert "0.3 s" in answer["message"]
    assert 0.28 <= waited < 3.0
    assert dropped
    assert (after["id"], after["type"]) == ("next", protocol.PREDICTION)


def test_an_answer_is_forwarded_with_the_servers_time_added(
    service: Service, worker: Heartbeat
) -> None:
    """The worker's frame reaches the client as it was sent, plus `timings_ms.server`: the
    time from the frame's arrival to its answer. Error frames (no timings) pass unchanged. The
    worker is told to answer on this consumer's own channel."""
    frame = prediction("p", digit=6)
    refusal = protocol.error("e", protocol.EMPTY, "Nothing is drawn.")

    async def scenario() -> tuple[list[Queued], float, list[dict[str, Any]]]:
        async with service.socket() as socket:
            sent = time.monotonic()
            await socket.predict("p")
            await socket.predict("e", blank_png())
            queued = [await service.published.next() for _ in range(2)]
            await asyncio.sleep(0.1)
            await service.answer(queued[0], frame)
            await service.answer(queued[1], refusal)
            answers = [await socket.receive(), await socket.receive()]
            return queued, (time.monotonic() - sent) * 1000, answers

    queued, elapsed_ms, (forwarded, error) = service.run(scenario)
    assert queued[0].reply_channel == queued[1].reply_channel
    assert queued[0].reply_channel.startswith("specific.")  # the process's own, per socket
    assert queued[0].ticket != queued[1].ticket
    server = forwarded["timings_ms"].pop("server")
    assert 100 <= server <= elapsed_ms
    assert forwarded == json.loads(protocol.encode(frame))
    assert error == refusal


def test_each_request_is_answered_once_even_when_ids_repeat(
    service: Service, worker: Heartbeat
) -> None:
    """Requests are matched to answers by the consumer's ticket, not the client's id: two
    requests with one id get their own answers, in the order they come; a second answer to
    the same request (a redelivered task) and an answer to no request are dropped."""

    async def scenario() -> tuple[list[Queued], list[dict[str, Any]], bool]:
        async with service.socket() as socket:
            await socket.predict("same")
            await socket.predict("same")
            first, second = [await service.published.next() for _ in range(2)]
            await service.answer(second, prediction("same", digit=1))
            await service.answer(first, prediction("same", digit=0))
            answers = [await socket.receive(), await socket.receive()]
            await service.answer(first, prediction("same", digit=9))  # a duplicate
            stray = Queued(first.request, first.reply_channel, 10_000, first.deadline, first.at)
            await service.answer(stray, prediction("same", digit=8))  # nobody's
            return [first, second], answers, await socket.silent(0.5)

    (first, second), answers, silent = service.run(scenario)
    assert first.ticket != second.ticket
    assert [(a["id"], a["digit"]) for a in answers] == [("same", 1), ("same", 0)]
    assert silent


def test_a_lost_redis_answers_every_request_in_flight_unavailable_and_keeps_the_socket(
    service: Service, worker: Heartbeat, settings: Any, private_redis: EmbeddedRedis
) -> None:
    """The channel layer on a Redis of this module's own, SIGKILLed with three requests in
    flight (two with one id): the layer reports the loss to the consumer (`digits.layer_lost`),
    which answers each of the three with `unavailable` at once (their answers could never
    come), and only once. The socket stays open: with Redis back, the next request is
    answered."""
    service.layer_url = private_redis.url
    settings.CHANNEL_LAYERS = service.layer_config(settings)

    async def scenario() -> tuple[list[dict[str, Any]], float, bool, dict[str, Any]]:
        async with service.socket() as socket:
            for request_id in ("dup", "dup", "solo"):
                await socket.predict(request_id)
            for _ in range(3):
                await service.published.next()
            assert await socket.silent(0.2)  # in flight, unanswered
            killed = time.monotonic()
            private_redis.process.kill()
            private_redis.process.wait()
            answers = [await socket.receive(timeout=10) for _ in range(3)]
            within = time.monotonic() - killed
            once = await socket.silent(0.5)
            await asyncio.to_thread(private_redis.start)
            await socket.predict("after")
            await service.answer(await service.published.next(), prediction("after"))
            return answers, within, once, await socket.receive(timeout=15)

    answers, within, once, after = service.run(scenario)
    assert sorted(a["id"] for a in answers) == ["dup", "dup", "solo"]
    assert {a["code"] for a in answers} == {protocol.UNAVAILABLE}
    assert "lost this request" in answers[0]["message"]
    assert within < settings.DIGITS_REQUEST_TIMEOUT / 2  # at once, not at the deadline
    assert once
    assert (after["id"], after["type"]) == ("after", protocol.PREDICTION)
