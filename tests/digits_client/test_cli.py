"""The `digits` command (digits_client.cli) against the service's API over real HTTP: one line per
file, JSON lines, number mode, errors and the exit status. The installed command on the real
stack is tests/e2e/test_http_api.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.management.devstack import free_port
from classifier.serving import protocol
from digits_client.cli import describe, main
from tests.catalogue import digit_png, good_ink
from tests.digits_client.conftest import ANSWERED_DIGIT, ApiServer


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "a.png").write_bytes(digit_png(1))
    (tmp_path / "b.json").write_text(json.dumps(good_ink()))
    return [str(tmp_path / "a.png"), str(tmp_path / "b.json")]


def test_one_line_per_file_in_order(
    api_server: ApiServer, files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", *files, "--url", api_server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{name}: {ANSWERED_DIGIT} (91.0%)" for name in files]


def test_json_lines_carry_the_answer_and_the_file(
    api_server: ApiServer, files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", *files, "--url", api_server.url, "--json", "--number"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["file"] for a in answers] == files
    assert all(a["number"] == f"{ANSWERED_DIGIT}{ANSWERED_DIGIT}" for a in answers)
    assert all(r.expect == protocol.EXPECT_NUMBER for r in api_server.worker.requests)


def test_a_refused_file_is_reported_the_others_answered_and_the_exit_status_is_1(
    api_server: ApiServer, files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank.json"
    blank.write_text("[]")
    assert main(["predict", str(blank), *files, "--url", api_server.url]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert f"{blank}: error {protocol.EMPTY}:" in err

    assert main(["predict", str(blank), "--url", api_server.url, "--json"]) == 1
    line = json.loads(capsys.readouterr().out)
    assert (line["file"], line["status"], line["code"]) == (str(blank), 400, protocol.EMPTY)


def test_no_service_at_the_url_is_an_error_not_a_traceback(
    files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", files[0], "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "refused" in capsys.readouterr().err.lower()


def test_answers_in_a_few_words() -> None:
    assert describe({"digit": 7, "confidence": 0.9981}) == "7 (99.8%)"
    assert describe({"digit": None, "confidence": 0.4}) == "not a digit (40.0% for the closest)"
    assert describe({"number": "2026", "digits": []}) == "2026"
    assert describe({"number": None, "digits": []}) == "no number read"
