"""Turn an uploaded image into the 28x28 input the model was trained on.

MNIST itself was made this way: grey levels, the digit cropped to its ink, its longest side scaled
to 20 px keeping the aspect ratio, padded to 28x28 and shifted so that its centre of mass is at the
centre. Doing the same to a canvas drawing (rather than shrinking the whole canvas) keeps digits
drawn small or off-centre readable. The format's constants, the limits and the errors are
`classifier.ml.input`'s; this module applies them.
"""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

from classifier.ml.input import (
    ACCEPTED_FORMATS,
    CENTRE_OF_MASS,
    DIGIT_BOX,
    IMAGE_SIZE,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    InvalidImageError,
)

# Below this contrast between ink and background (on a 0..1 scale) the image counts as blank:
# JPEG noise and paper texture stay below it, the faintest pen strokes stay above.
MIN_CONTRAST = 0.1
# Share of the ink's peak that marks a pixel as part of the digit when cropping; drops faint
# antialiasing halos and compression noise from the bounding box.
INK_THRESHOLD = 0.25


# Signatures of the formats we accept and of common ones we refuse, to name them in the message.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
)


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype svg")):
        return "SVG"
    return None


def decode_image(data: bytes) -> Image.Image:
    """Decode PNG, JPEG or WebP bytes safely.

    The size in bytes is checked first, then the dimensions from the header before any pixel is
    decoded: Pillow's own decompression-bomb guard only warns below 179 million pixels, so a small
    file could otherwise inflate into gigabytes. No Pillow exception escapes: every failure is an
    `ImageError` whose message a person can read.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImageError("The image must be sent as bytes.")
    data = bytes(data)
    if not data:
        raise InvalidImageError("The image is empty: no bytes were received.")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(
            f"The image is {len(data) / 1e6:.1f} MB; the limit is {MAX_IMAGE_BYTES / 1e6:.0f} MB."
        )
    kind = _sniff_format(data)
    if kind not in ACCEPTED_FORMATS:
        what = f"{kind} images are" if kind else "This file is"
        raise InvalidImageError(f"{what} not accepted; send a PNG, JPEG or WebP image.")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            _check_dimensions(width, height)
            image.load()
            if kind != "PNG":
                # Phones store JPEGs sideways with an EXIF note; honour it.
                ImageOps.exif_transpose(image, in_place=True)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired in `open` (above 89 million pixels), before we saw the size.
        raise ImageTooLargeError(
            f"The image has too many pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels."
        ) from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise InvalidImageError(
            f"The {kind} image could not be read: it is truncated or corrupt."
        ) from exc
    return image


def _check_dimensions(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError("The image has no pixels.")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; each side may be at most {MAX_IMAGE_SIDE}."
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels ({width * height:,}); "
            f"the limit is {MAX_IMAGE_PIXELS:,} pixels."
        )


def _grey_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels in [0, 1] and, when the image has transparency, alpha in [0, 1]."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        grey = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if grey.max(initial=0) > 255 else 255.0
        return np.clip(grey / peak, 0.0, 1.0), None
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    if has_alpha:
        la = np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float32) / 255.0
        return la[..., 0], la[..., 1]
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, None


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency: transparent pixels are background.

    A canvas left transparent carries its ink in the opaque pixels, whatever their colour, so the
    background is taken to be the opposite of the ink's colour (black ink lands on white, white
    ink on black); the polarity check then treats both alike.
    """
    weight = alpha.sum()
    if weight <= 0:
        return np.zeros_like(grey)
    ink_colour = float((grey * alpha).sum() / weight)
    background = 1.0 if ink_colour < 0.5 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def _border(grey: np.ndarray) -> np.ndarray:
    band = max(1, min(grey.shape) // 20)
    return np.concatenate(
        [
            grey[:band].ravel(),
            grey[-band:].ravel(),
            grey[:, :band].ravel(),
            grey[:, -band:].ravel(),
        ]
    )


def _ink(grey: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] on a background of 0, whichever polarity the image has.

    The background is what the border mostly shows (digits rarely fill the border); when the
    border is ambiguous the whole image's majority decides.
    """
    background = float(np.median(_border(grey)))
    if 0.35 < background < 0.65:
        background = float(np.median(grey))
    ink = 1.0 - grey if background >= 0.5 else grey
    background = min(background, 1.0 - background)
    peak = float(ink.max())
    if peak - background < MIN_CONTRAST:
        raise EmptyImageError("The image is blank: draw a digit first.")
    return np.clip((ink - background) / (peak - background), 0.0, 1.0)


def ink_map(image: Image.Image) -> np.ndarray:
    """The image's ink in [0, 1] on a background of 0 (float32, the image's size), whatever its
    polarity, colours or transparency; raises `EmptyImageError` when nothing is drawn."""
    grey, alpha = _grey_and_alpha(image)
    if alpha is not None:
        grey = _composite(grey, alpha)
    return _ink(grey).astype(np.float32, copy=False)


def to_mnist(image: Image.Image) -> np.ndarray:
    """The 28x28 uint8 image (white ink on black) the model expects, made the way MNIST was."""
    return ink_to_mnist(ink_map(image))


def ink_to_mnist(ink: np.ndarray) -> np.ndarray:
    """`to_mnist` of an ink map (`ink_map`'s scale): also how each digit of a number is made."""
    mask = ink >= INK_THRESHOLD
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise EmptyImageError("The image is blank: draw a digit first.")
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    new_h = max(1, min(DIGIT_BOX, round(height * scale)))
    new_w = max(1, min(DIGIT_BOX, round(width * scale)))
    # Pillow's resampling widens its kernel when shrinking, so a large drawing is antialiased
    # rather than sampled; "F" mode keeps the grey levels exact.
    resized = Image.fromarray(crop.astype(np.float32)).resize(
        (new_w, new_h), Image.Resampling.LANCZOS
    )
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    # A hairline shrunk from a large drawing comes out grey; MNIST strokes always peak at white.
    digit /= max(float(digit.max()), 1e-6)

    mass = float(digit.sum())
    if mass <= 0:
        raise EmptyImageError("The image is blank: draw a digit first.")
    ys = np.arange(new_h, dtype=np.float32)
    xs = np.arange(new_w, dtype=np.float32)
    cy = float((digit.sum(axis=1) * ys).sum() / mass)
    cx = float((digit.sum(axis=0) * xs).sum() / mass)
    # Place the centre of mass at the centre, but never push ink off the image.
    top = min(max(round(CENTRE_OF_MASS - cy), 0), IMAGE_SIZE - new_h)
    left = min(max(round(CENTRE_OF_MASS - cx), 0), IMAGE_SIZE - new_w)

    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = digit
    return np.round(out * 255.0).astype(np.uint8)


def preprocess(data: bytes) -> np.ndarray:
    """Image bytes (PNG, JPEG, WebP) to the model's 28x28 uint8 input; raises `ImageError`."""
    return to_mnist(decode_image(data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_preview(image28: np.ndarray) -> str:
    """A PNG data URL of the 28x28 image the model saw, for the page to show.

    Written here (signature, header, one zlib-compressed IDAT of the rows, each with filter 0,
    end), not by Pillow: 0.05 instead of 0.10 ms and a few bytes smaller, on every answer.
    """
    array = np.asarray(image28)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    height, width = array.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # a 0 (no filter) before each row
    rows[:, 1:] = array
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    png = b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _png_chunk(b"IEND", b""),
        )
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
