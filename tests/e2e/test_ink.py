"""Ink end to end: strokes sent over a real socket through uvicorn, Celery on Redis and a real
worker process, answered as images are, and a correction sent as ink stored with its ink."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from classifier.serving import protocol
from tests.e2e.test_service import check_prediction, current_version
from tests.helpers import Stack
from tests.serving.test_batch_ink import template_ink

pytestmark = pytest.mark.slow


def test_digits_and_a_number_sent_as_ink_come_back_read(stack: Stack) -> None:
    """Ten digits as the page sends them (whole pixels, times), and a number whose digits
    overlap, all in flight at once on one socket."""
    number = [s for k, d in enumerate((2, 0, 5)) for s in template_ink(d, left=70 * k)]

    async def scenario() -> dict[str, dict[str, Any]]:
        async with stack.client() as client:
            for digit in range(10):
                frame = {"type": "predict", "id": f"ink-{digit}", "ink": template_ink(digit)}
                await client.send_raw(json.dumps(frame))
            frame = {"type": "predict", "id": "n", "ink": number, "expect": "number"}
            await client.send_raw(json.dumps(frame))
            return await client.receive_many(11)

    answers = asyncio.run(scenario())
    model = current_version(stack)
    for digit in range(10):
        check_prediction(answers[f"ink-{digit}"], digit, model)
    assert answers["n"]["number"] == "205", answers["n"]


def test_a_correction_sent_as_ink_keeps_its_ink(stack: Stack) -> None:
    strokes = template_ink(4)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with stack.client() as client:
            await client.send_raw(json.dumps({"type": "predict", "id": "p", "ink": strokes}))
            answer = await client.receive()
            fix = {"type": "feedback", "id": "f", "ink": strokes, "digit": 4}
            await client.send_raw(json.dumps(fix))
            return answer, await client.receive()

    before = len(stack.corrections())
    answer, saved = asyncio.run(scenario())
    assert answer["digit"] == 4
    assert saved == {"type": protocol.FEEDBACK_SAVED, "id": "f", "duplicate": False}
    rows = stack.corrections()
    assert len(rows) == before + 1
    row = rows[-1]
    ink = json.loads(row["ink"])  # sqlite3 reads the JSON column as text
    assert ink == strokes
    assert (bytes(row["image"]), row["media_type"], len(row["image28"])) == (b"", "", 784)
