"""The `digits` command: `digits predict FILE... [--url URL] [--number] [--json]`.

One line per file, in the order given: `FILE: 7 (99.8%)`, or with `--json` the service's answer
as one JSON object a line with the file's name added. A file the service refuses prints its
code and sentence (on stderr, or as its JSON line) and the command exits 1 once all are done.
The key for a service with DIGITS_API_KEYS comes from `--api-key` or the environment variable
DIGITS_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from digits_client.client import DEFAULT_URL, EXPECT_DIGIT, EXPECT_NUMBER, Client, DigitsError


def describe(answer: dict[str, Any]) -> str:
    """An answer in a few words: the digit and its confidence, or the number."""
    if "number" in answer:
        if answer["number"] is None:
            return "no number read"
        return str(answer["number"])
    confidence = f"{100 * float(answer.get('confidence', 0)):.1f}%"
    if answer.get("digit") is None:
        return f"not a digit ({confidence} for the closest)"
    return f"{answer['digit']} ({confidence})"


def predict(args: argparse.Namespace) -> int:
    expect = EXPECT_NUMBER if args.number else EXPECT_DIGIT
    failed = 0
    with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        for name in args.files:
            try:
                answer = client.predict(name, expect=expect)
            except DigitsError as exc:
                failed += 1
                if args.json:
                    error = {"file": name, "status": exc.status, "code": exc.code}
                    print(json.dumps({**error, "message": exc.message}), flush=True)
                else:
                    print(f"{name}: error {exc}", file=sys.stderr, flush=True)
                continue
            except OSError as exc:  # an unreadable file, or no service at the URL
                failed += 1
                print(f"{name}: {exc}", file=sys.stderr, flush=True)
                continue
            if args.json:
                print(json.dumps({"file": name, **answer}, separators=(",", ":")), flush=True)
            else:
                print(f"{name}: {describe(answer)}", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="digits", description="A client of the Digits service.")
    commands = parser.add_subparsers(dest="command", required=True)
    reading = commands.add_parser(
        "predict", help="read the digit (or number) in image or ink files"
    )
    reading.add_argument("files", nargs="+", metavar="FILE", help="PNG, JPEG, WebP or ink JSON")
    reading.add_argument(
        "--url", default=DEFAULT_URL, help=f"the service's address (default: {DEFAULT_URL})"
    )
    reading.add_argument(
        "--number", action="store_true", help="read each file as a number of several digits"
    )
    reading.add_argument(
        "--json", action="store_true", help="print each answer as one JSON object a line"
    )
    reading.add_argument(
        "--api-key",
        default=os.environ.get("DIGITS_API_KEY") or None,
        help="the key of a service that wants one (default: $DIGITS_API_KEY)",
    )
    reading.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each answer"
    )
    args = parser.parse_args(argv)
    return predict(args)


if __name__ == "__main__":
    sys.exit(main())
