"""The one catalogue of bad input: frames the consumer refuses, images the worker refuses.

Read by the protocol's tests (`parse_frame` on every frame), the fuzzing of the decoders
(tests/serving/test_bad_input.py: every image through `preprocess`), the consumer in-process
(tests/serving/test_consumers.py: every frame on one socket) and the real service
(tests/e2e/test_service.py: all of it on one socket of a real uvicorn and worker).

Nothing is built at import time: every frame and image is made by a cached function the first
time a test asks for it (the decompression bombs take a second or two to compress, and the
largest frames are megabytes).
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from classifier.ml.input import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE, MAX_INK_POINTS, MAX_INK_STROKES
from classifier.ml.training.canvas import render_template_png
from classifier.serving import protocol
from tests.helpers import data_url

# --- What a client may be told -------------------------------------------------------------------

# Codes `parse_frame` may refuse a frame with (docs/protocol.md).
FRAME_CODES = frozenset(
    {
        protocol.BINARY_FRAME,
        protocol.FRAME_TOO_LARGE,
        protocol.BAD_JSON,
        protocol.BAD_FRAME,
        protocol.UNKNOWN_TYPE,
        protocol.BAD_ID,
        protocol.BAD_LABEL,
        protocol.BAD_DATA_URL,
        protocol.UNSUPPORTED_TYPE,
        protocol.BAD_BASE64,
        protocol.IMAGE_TOO_LARGE,
        protocol.INVALID_IMAGE,
        protocol.BAD_INK,
        protocol.TOO_LARGE,
        protocol.EMPTY,
    }
)
# Codes an image the worker cannot read is answered with (`protocol.image_error_code`).
IMAGE_CODES = frozenset({protocol.IMAGE_TOO_LARGE, protocol.INVALID_IMAGE, protocol.EMPTY})


def cached(build: Callable[[], Any]) -> Callable[[], Any]:
    """`build`, called once on first use and remembered."""
    return functools.cache(build)


# --- Images built byte by byte -------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A real decompression bomb: a 1-bit PNG of `width` x `height` zeros, compressed for real
    (20000 x 20000 is 50 MB of pixel data in about 50 KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_claiming(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A small PNG whose header claims any size and format, with a tiny real IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def png_with_chunk(kind: bytes, data: bytes) -> bytes:
    """A valid PNG (a drawn 4) with one more chunk right after its header."""
    image = digit_png(4, 64)
    return image[:33] + png_chunk(kind, data) + image[33:]


def inflating(size: int) -> bytes:
    """`size` zero bytes, deflated (a 200 MB payload is about 200 KB)."""
    compressor = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG with its frame header (SOF0) rewritten to claim another size."""
    data = bytearray(encoded(Image.new("L", (8, 8), 255), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@functools.cache
def digit_png(digit: int, size: int = 384) -> bytes:
    """A digit drawn with pen strokes as the page draws them (classifier.ml.training.canvas)."""
    return render_template_png(digit, size=size)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><text>7</text></svg>'


# --- Hostile images: each passes the consumer's checks and is refused by the worker ------------


@dataclass(frozen=True)
class HostileImage:
    name: str
    build: Callable[[], bytes]  # cached: built on first use
    # The code it must be refused with; None where any code of IMAGE_CODES is right (a damaged
    # file may be read as corrupt or as too large, depending on where the damage falls).
    code: str | None

    @property
    def data(self) -> bytes:
        return self.build()

    def accepts(self, code: str) -> bool:
        return code == self.code if self.code else code in IMAGE_CODES


def _bad_crc() -> bytes:
    good = digit_png(1)
    return good[:30] + b"\0\0" + good[32:]


HOSTILE_IMAGES: list[HostileImage] = [
    # 400 million pixels: Pillow's own guard refuses it.
    HostileImage(
        "png-bomb-20000x20000", cached(lambda: png_bomb(20_000, 20_000)), protocol.IMAGE_TOO_LARGE
    ),
    # 81 million: under Pillow's guard, over ours.
    HostileImage(
        "png-bomb-9000x9000", cached(lambda: png_bomb(9_000, 9_000)), protocol.IMAGE_TOO_LARGE
    ),
    HostileImage("png-1x100000", cached(lambda: png_bomb(1, 100_000)), protocol.IMAGE_TOO_LARGE),
    HostileImage("png-100000x1", cached(lambda: png_bomb(100_000, 1)), protocol.IMAGE_TOO_LARGE),
    HostileImage(
        "png-one-side-over",
        cached(lambda: png_bomb(MAX_IMAGE_SIDE + 1, 1)),
        protocol.IMAGE_TOO_LARGE,
    ),
    HostileImage(
        "png-header-2^31",
        cached(lambda: png_claiming(2**31 - 1, 2**31 - 1)),
        protocol.IMAGE_TOO_LARGE,
    ),
    # Only the header lies: a sliver 100000 pixels tall.
    HostileImage(
        "png-header-1x100000", cached(lambda: png_claiming(1, 100_000)), protocol.IMAGE_TOO_LARGE
    ),
    HostileImage("png-zero-size", cached(lambda: png_claiming(0, 0)), protocol.INVALID_IMAGE),
    # A text chunk and a colour profile that inflate to 200 MB each.
    HostileImage(
        "png-ztxt-bomb",
        cached(lambda: png_with_chunk(b"zTXt", b"Comment\0\0" + inflating(200 << 20))),
        protocol.INVALID_IMAGE,
    ),
    HostileImage(
        "png-iccp-bomb",
        cached(lambda: png_with_chunk(b"iCCP", b"profile\0\0" + inflating(200 << 20))),
        protocol.INVALID_IMAGE,
    ),
    HostileImage(
        "jpeg-claiming-65500",
        cached(lambda: jpeg_claiming(65_500, 65_500)),
        protocol.IMAGE_TOO_LARGE,
    ),
    HostileImage("png-truncated", cached(lambda: digit_png(1)[:300]), protocol.INVALID_IMAGE),
    HostileImage("png-bad-crc", cached(_bad_crc), None),
    HostileImage(
        "png-no-idat",
        cached(lambda: encoded(Image.new("L", (8, 8)), "PNG")[:33] + png_chunk(b"IEND", b"")),
        None,
    ),
    HostileImage(
        "jpeg-truncated",
        cached(lambda: encoded(Image.new("RGB", (64, 64), "white"), "JPEG")[:100]),
        None,
    ),
    HostileImage("svg", cached(lambda: SVG), protocol.INVALID_IMAGE),
    HostileImage(
        "gif", cached(lambda: encoded(Image.new("L", (8, 8)), "GIF")), protocol.INVALID_IMAGE
    ),
    HostileImage(
        "bmp", cached(lambda: encoded(Image.new("L", (8, 8)), "BMP")), protocol.INVALID_IMAGE
    ),
    HostileImage("text", cached(lambda: b"hello, world"), protocol.INVALID_IMAGE),
    HostileImage("signature-only", cached(lambda: PNG_SIGNATURE), protocol.INVALID_IMAGE),
    HostileImage("zeros", cached(lambda: b"\0" * 1000), protocol.INVALID_IMAGE),
]

# The real decompression bombs: what an attacker sends is small.
BOMBS = ("png-bomb-20000x20000", "png-bomb-9000x9000", "png-ztxt-bomb", "png-iccp-bomb")


def hostile_image(name: str) -> HostileImage:
    return next(image for image in HOSTILE_IMAGES if image.name == name)


# --- Bad frames: each refused by the consumer before anything is queued -------------------------


@dataclass(frozen=True)
class BadFrame:
    name: str
    build: Callable[[], str | bytes]  # cached: built on first use
    code: str
    request_id: str | None  # the id the error names: None when the frame had no usable one

    @property
    def frame(self) -> str | bytes:
        """The websocket message: text, or bytes for a binary frame."""
        return self.build()

    @property
    def text(self) -> str | None:
        frame = self.frame
        return frame if isinstance(frame, str) else None

    @property
    def data(self) -> bytes | None:
        frame = self.frame
        return frame if isinstance(frame, bytes) else None


@functools.cache
def good_image() -> str:
    """A data URL the service would answer with a prediction (a drawn 7)."""
    return data_url(digit_png(7))


def predict(request_id: Any = "r", image: Any = None, **fields: Any) -> str:
    """A predict frame; a field given as None is left out."""
    body = {"type": protocol.PREDICT, "id": request_id, "image": image, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None})


def feedback(request_id: Any = "r", image: Any = None, **fields: Any) -> str:
    """A feedback frame; a field given as None is left out."""
    return predict(request_id, image, type=protocol.FEEDBACK, **fields)


def good_ink() -> list[list[list[float]]]:
    """Ink the service would answer with a prediction: a 7 in two strokes, with times."""
    return [[[40, 30, 0], [160, 30, 90], [90, 230, 260]], [[60, 130, 700], [140, 130, 800]]]


def ink_predict(request_id: Any = "r", ink: Any = None, **fields: Any) -> str:
    """A predict frame carrying ink; a field given as None is left out."""
    body = {"type": protocol.PREDICT, "id": request_id, "ink": ink, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None})


def _frame(name: str, build: Callable[[], str | bytes], code: str, request_id: str | None):
    return BadFrame(name, cached(build), code, request_id)


BAD_FRAMES: list[BadFrame] = [
    # Not JSON.
    _frame("not-json", lambda: "this is not json", protocol.BAD_JSON, None),
    _frame("empty-text", lambda: "", protocol.BAD_JSON, None),
    _frame("truncated-json", lambda: predict("t", good_image())[:50], protocol.BAD_JSON, None),
    # Nested past the parser's recursion limit.
    _frame("deep-nesting", lambda: "[" * 100_000, protocol.BAD_JSON, None),
    # Past Python's limit on the digits of an int.
    _frame("huge-number", lambda: "1" * 5000, protocol.BAD_JSON, None),
    # JSON, but not a predict object.
    _frame("json-list", lambda: "[1, 2, 3]", protocol.BAD_FRAME, None),
    _frame("json-string", lambda: '"predict"', protocol.BAD_FRAME, None),
    _frame("json-null", lambda: "null", protocol.BAD_FRAME, None),
    _frame(
        "no-type",
        lambda: json.dumps({"id": "t1", "image": good_image()}),
        protocol.BAD_FRAME,
        "t1",
    ),
    _frame(
        "type-not-string",
        lambda: predict("t2", good_image(), type=["predict"]),
        protocol.BAD_FRAME,
        "t2",
    ),
    _frame("type-number", lambda: predict("t2n", type=5), protocol.BAD_FRAME, "t2n"),
    _frame("unknown-type", lambda: predict("t3", type="subscribe"), protocol.UNKNOWN_TYPE, "t3"),
    # The id.
    _frame("no-id", lambda: predict(None, good_image()), protocol.BAD_ID, None),
    _frame("id-number", lambda: predict(42, good_image()), protocol.BAD_ID, None),
    _frame("id-empty", lambda: predict("", good_image()), protocol.BAD_ID, None),
    _frame(
        "id-one-too-long",
        lambda: predict("x" * (protocol.MAX_ID_LENGTH + 1), good_image()),
        protocol.BAD_ID,
        None,
    ),
    _frame("id-huge", lambda: predict("x" * 10_000, good_image()), protocol.BAD_ID, None),
    # The image field, checked before decoding.
    _frame("no-image", lambda: predict("t4"), protocol.BAD_FRAME, "t4"),
    _frame("image-number", lambda: predict("t5", 5), protocol.BAD_FRAME, "t5"),
    # What a predict reads: "digit" or "number", nothing else.
    _frame(
        "expect-words",
        lambda: predict("t5e", good_image(), expect="words"),
        protocol.BAD_FRAME,
        "t5e",
    ),
    _frame(
        "expect-null",
        lambda: predict("t5n", good_image()).replace("}", ', "expect": null}'),
        protocol.BAD_FRAME,
        "t5n",
    ),
    _frame(
        "image-url",
        lambda: predict("t6", "https://example.com/7.png"),
        protocol.BAD_DATA_URL,
        "t6",
    ),
    _frame(
        "not-base64-url", lambda: predict("t7", "data:image/png,raw"), protocol.BAD_DATA_URL, "t7"
    ),
    _frame(
        "data-url-no-comma",
        lambda: predict("t7c", "data:image/png;base64"),
        protocol.BAD_DATA_URL,
        "t7c",
    ),
    _frame(
        "data-url-text",
        lambda: predict("t8", "data:text/plain;base64,aGk="),
        protocol.UNSUPPORTED_TYPE,
        "t8",
    ),
    _frame(
        "data-url-svg",
        lambda: predict("t9", data_url(SVG, "image/svg+xml")),
        protocol.UNSUPPORTED_TYPE,
        "t9",
    ),
    _frame(
        "data-url-gif",
        lambda: predict("t10", "data:image/gif;base64,R0lGODlhAQABAAAAACw="),
        protocol.UNSUPPORTED_TYPE,
        "t10",
    ),
    _frame(
        "data-url-no-media-type",
        lambda: predict("t10m", "data:;base64,aGVsbG8="),
        protocol.UNSUPPORTED_TYPE,
        "t10m",
    ),
    _frame(
        "broken-base64",
        lambda: predict("t11", "data:image/png;base64,iVBOR@@@"),
        protocol.BAD_BASE64,
        "t11",
    ),
    _frame(
        "base64-padding",
        lambda: predict("t12", "data:image/png;base64,iVBORw0KG"),
        protocol.BAD_BASE64,
        "t12",
    ),
    _frame(
        "base64-space",
        lambda: predict("t12s", "data:image/png;base64,aGVs bG8="),
        protocol.BAD_BASE64,
        "t12s",
    ),
    _frame(
        "empty-payload",
        lambda: predict("t13", "data:image/png;base64,"),
        protocol.INVALID_IMAGE,
        "t13",
    ),
    # Exactly one byte over the limit: the length check and the decoded-size check agree.
    _frame(
        "image-over-bytes",
        lambda: predict("t14", data_url(b"\0" * (MAX_IMAGE_BYTES + 1))),
        protocol.IMAGE_TOO_LARGE,
        "t14",
    ),
    # A feedback's own fields, checked after its image.
    _frame("feedback-no-digit", lambda: feedback("f1", good_image()), protocol.BAD_LABEL, "f1"),
    _frame(
        "feedback-digit-10",
        lambda: feedback("f2", good_image(), digit=10),
        protocol.BAD_LABEL,
        "f2",
    ),
    _frame(
        "feedback-digit-string",
        lambda: feedback("f3", good_image(), digit="7"),
        protocol.BAD_LABEL,
        "f3",
    ),
    _frame(
        "feedback-digit-true",
        lambda: feedback("f4", good_image(), digit=True),
        protocol.BAD_LABEL,
        "f4",
    ),
    _frame(
        "feedback-predicted-string",
        lambda: feedback("f5", good_image(), digit=7, predicted="1"),
        protocol.BAD_FRAME,
        "f5",
    ),
    _frame(
        "feedback-gif",
        lambda: feedback("f6", "data:image/gif;base64,R0lGODlhAQABAAAAACw=", digit=3),
        protocol.UNSUPPORTED_TYPE,
        "f6",
    ),
    # Ink, checked before queueing: the worker never sees any of it.
    _frame("ink-not-list", lambda: ink_predict("k1", "strokes"), protocol.BAD_INK, "k1"),
    _frame("ink-object", lambda: ink_predict("k2", {"x": [1]}), protocol.BAD_INK, "k2"),
    _frame("ink-stroke-number", lambda: ink_predict("k3", [5]), protocol.BAD_INK, "k3"),
    _frame("ink-point-number", lambda: ink_predict("k4", [[5, 6]]), protocol.BAD_INK, "k4"),
    _frame("ink-point-short", lambda: ink_predict("k5", [[[5]]]), protocol.BAD_INK, "k5"),
    _frame("ink-point-long", lambda: ink_predict("k6", [[[1, 2, 3, 4]]]), protocol.BAD_INK, "k6"),
    _frame("ink-point-object", lambda: ink_predict("k6o", [[{"x": 1}]]), protocol.BAD_INK, "k6o"),
    _frame("ink-string-xy", lambda: ink_predict("k7", [[["1", 2]]]), protocol.BAD_INK, "k7"),
    _frame("ink-bool-xy", lambda: ink_predict("k8", [[[True, 2]]]), protocol.BAD_INK, "k8"),
    _frame("ink-null-t", lambda: ink_predict("k8n", [[[1, 2, None]]]), protocol.BAD_INK, "k8n"),
    # Python's json reads NaN and Infinity; no drawing has them.
    _frame(
        "ink-nan",
        lambda: ink_predict("k9", [[[1, 2]]]).replace("[1, 2]", "[NaN, 2]"),
        protocol.BAD_INK,
        "k9",
    ),
    _frame(
        "ink-infinity",
        lambda: ink_predict("k10", [[[1, 2, 3]]]).replace("3]", "Infinity]"),
        protocol.BAD_INK,
        "k10",
    ),
    _frame("ink-huge-xy", lambda: ink_predict("k11", [[[1e300, 2]]]), protocol.BAD_INK, "k11"),
    _frame(
        "ink-and-image",
        lambda: ink_predict("k12", good_ink(), image=good_image()),
        protocol.BAD_FRAME,
        "k12",
    ),
    _frame("ink-no-strokes", lambda: ink_predict("k13", []), protocol.EMPTY, "k13"),
    _frame("ink-empty-strokes", lambda: ink_predict("k14", [[], []]), protocol.EMPTY, "k14"),
    _frame(
        "ink-too-many-strokes",
        lambda: ink_predict("k15", [[[1, 1]]] * (MAX_INK_STROKES + 1)),
        protocol.TOO_LARGE,
        "k15",
    ),
    _frame(
        "ink-too-many-points",
        lambda: ink_predict("k16", [[[i % 50, i % 70] for i in range(MAX_INK_POINTS + 1)]]),
        protocol.TOO_LARGE,
        "k16",
    ),
    _frame(
        "ink-expect-words",
        lambda: ink_predict("k17", good_ink(), expect="words"),
        protocol.BAD_FRAME,
        "k17",
    ),
    _frame(
        "ink-feedback-no-digit",
        lambda: ink_predict("k18", good_ink(), type=protocol.FEEDBACK),
        protocol.BAD_LABEL,
        "k18",
    ),
    _frame(
        "ink-feedback-bad-ink",
        lambda: ink_predict("k19", [[[1, "2"]]], type=protocol.FEEDBACK, digit=7),
        protocol.BAD_INK,
        "k19",
    ),
    # The frame.
    _frame("binary-frame", lambda: PNG_SIGNATURE + b"\0" * 100, protocol.BINARY_FRAME, None),
    _frame(
        "frame-over-limit",
        lambda: " " * (protocol.MAX_FRAME_CHARS + 1),
        protocol.FRAME_TOO_LARGE,
        None,
    ),
]


def names(entries: list[Any]) -> list[str]:
    """Test ids for a parametrised table."""
    return [entry.name for entry in entries]
