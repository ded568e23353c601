"""What the model takes in: the MNIST format, the limits on an uploaded image, and its errors.

The one home of these constants. It imports nothing, so the web process (which checks frames
against the limits but never decodes an image) reads them without loading numpy, Pillow or torch.
"""

from __future__ import annotations

# --- The model's input: MNIST's format --------------------------------------------------------

IMAGE_SIZE = 28  # the model's input is IMAGE_SIZE x IMAGE_SIZE
DIGIT_BOX = 20  # the digit's longest side, as in MNIST
# Mean and standard deviation of the MNIST training pixels scaled to [0, 1]; training and
# inference normalise with the same numbers (classifier.ml.model.normalize).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# MNIST puts the centre of mass of the ink at pixel (14, 14) (measured on the training set).
CENTRE_OF_MASS = 14.0

# --- Limits on an uploaded image: checked before any pixel is decoded ---------------------------

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_PIXELS = 16_000_000
MAX_IMAGE_SIDE = 8192
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# --- Limits on ink (strokes of points): checked before the worker sees it -------------------------
# Defaults for a 12-digit number written slowly with a fast pen: the page samples a pointer about
# 60-120 times a second and drops points closer than 0.2% of the pad, so a digit takes 30-200
# points and one to four strokes; a tablet at 240 Hz writing 12 digits in 20 s stays under the
# points. DIGITS_MAX_INK_STROKES and DIGITS_MAX_INK_POINTS override them (digits_site.settings).
MAX_INK_STROKES = 100
MAX_INK_POINTS = 8_000
# Coordinates and times beyond this magnitude are refused: no drawing area is that large, and
# float32 arithmetic on them would lose the drawing.
MAX_INK_COORDINATE = 1e6

# The most digits a number (a predict with "expect": "number") may have: a phone number with its
# country code, or an IBAN's check digits, fit; a page of scribbles does not.
MAX_NUMBER_DIGITS = 12

# --- What the model answers, and the name of the model that answered ----------------------------

# The digits a label (and a model's answer) may be.
DIGITS = range(10)
# The longest model version a client may name (the page sends back what it was told) and a
# stored correction keeps.
MAX_MODEL_LENGTH = 128


# --- Why an image cannot be read ------------------------------------------------------------------
# The serving layer turns each into the code a client sees (classifier.serving.protocol).


class ImageError(ValueError):
    """An image that cannot be turned into the model's input; the message is for a person."""


class EmptyImageError(ImageError):
    """Nothing is drawn: a blank canvas is not guessed at."""


class InvalidImageError(ImageError):
    """Not a PNG, JPEG or WebP, or truncated or corrupt."""


class ImageTooLargeError(ImageError):
    """Over the limits in bytes or pixels."""


class TooManyDigitsError(ImageError):
    """A number with more than `MAX_NUMBER_DIGITS` digits."""
