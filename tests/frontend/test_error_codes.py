"""The page's error codes against the protocol's, read from the page's script (no browser): the
page handles no code the server never sends, and has its words for every code the socket can
send (classifier/serving/protocol.py, as schemas.protocol_codes reads it)."""

from __future__ import annotations

import re
from pathlib import Path

from classifier.serving.schemas import protocol_codes

SCRIPTS = Path(__file__).resolve().parents[2] / "frontend" / "static" / "frontend"
APP = SCRIPTS / "app.js"


def _error_text_keys(source: str) -> set[str]:
    """The keys of app.js's `ERROR_TEXT` object: its words for each code."""
    match = re.search(r"^const ERROR_TEXT = \{\n(?P<body>.*?)^\};", source, re.M | re.S)
    assert match, "app.js defines ERROR_TEXT"
    return set(re.findall(r"^  ([a-z0-9_]+):", match["body"], re.M))


def handled_codes(source: str) -> set[str]:
    """Every error code a script names: ERROR_TEXT's keys, the sets of codes it retries on, and
    the codes it compares a `code` with."""
    codes = _error_text_keys(source) if "const ERROR_TEXT" in source else set()
    for match in re.finditer(r"_CODES = new Set\(\[(?P<items>[^\]]*)\]\)", source):
        codes |= set(re.findall(r'"([^"]+)"', match["items"]))
    codes |= set(re.findall(r'\bcode\s*[!=]==?\s*"([^"]+)"', source))
    return codes


def test_the_reading_finds_the_codes_the_page_names() -> None:
    source = APP.read_text()
    codes = handled_codes(source)
    assert {"empty", "too_many_digits", "rate_limited", "timeout"} <= codes
    assert handled_codes('const RETRY_CODES = new Set(["a", "b"]);\nif (x.code === "c") y();') == {
        "a",
        "b",
        "c",
    }


def test_every_code_the_page_handles_is_one_the_server_sends() -> None:
    """No dead branches: a code the page handles that protocol.py does not define never comes."""
    sent = protocol_codes()
    for script in sorted(SCRIPTS.glob("*.js")):
        unknown = handled_codes(script.read_text()) - sent
        assert not unknown, f"{script.name} handles codes the server never sends: {unknown}"


def test_the_page_has_words_for_every_code_the_socket_can_send() -> None:
    """Each code has its entry in ERROR_TEXT (null: the server's own sentence is shown)."""
    missing = protocol_codes() - _error_text_keys(APP.read_text())
    assert not missing, f"app.js's ERROR_TEXT has nothing for {sorted(missing)}"
