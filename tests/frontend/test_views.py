"""The page at `/` without the serving stack: markup, static files and the socket path."""

import re
from html.parser import HTMLParser

import pytest
from django.test import Client

from classifier.serving.protocol import PREDICT_PATH


class _Collector(HTMLParser):
    """Collects the elements the checks below look at."""

    def __init__(self) -> None:
        super().__init__()
        self.buttons: list[str] = []
        self.assets: list[str] = []
        self.by_id: dict[str, dict[str, str | None]] = {}
        self._in_button = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "id" in attributes:
            self.by_id[str(attributes["id"])] = {"tag": tag, **attributes}
        if tag == "button":
            self._in_button, self._text = True, []
        if tag in {"script", "link"}:
            self.assets.append(str(attributes.get("src") or attributes.get("href")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._in_button = False
            self.buttons.append("".join(self._text).strip())

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self._text.append(data)


@pytest.fixture
def page() -> tuple[str, _Collector]:
    response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    collector = _Collector()
    collector.feed(html)
    return html, collector


def test_page_has_its_buttons_by_name(page: tuple[str, _Collector]) -> None:
    """The three drawing buttons, then the feedback row: "Right" and the ten digits."""
    _, found = page
    assert found.buttons == ["Predict", "Undo", "Reset", "Right", *map(str, range(10))]


def test_answer_area_and_canvas_are_accessible(page: tuple[str, _Collector]) -> None:
    html, found = page
    prediction = found.by_id["prediction"]
    assert prediction["tag"] == "p"
    # The prediction element holds just the digit: empty until the first answer.
    assert re.search(r'id="prediction"[^>]*></p>', html)
    assert 'aria-live="polite"' in html
    canvas = found.by_id["pad"]
    assert canvas["tag"] == "canvas"
    assert canvas["role"] == "img"
    assert canvas["aria-label"]
    assert canvas["aria-describedby"] in found.by_id
    assert html.count('<li style="--p: 0">') == 10
    assert 'name="viewport"' in html


def test_socket_path_is_handed_to_the_page(page: tuple[str, _Collector]) -> None:
    html, _ = page
    assert f'data-ws-path="/{PREDICT_PATH}"' in html


def test_static_files_are_served_by_the_project(page: tuple[str, _Collector]) -> None:
    _, found = page
    assert found.assets, "the page loads its script and stylesheet"
    client = Client()
    for url in found.assets:
        assert url.startswith("/static/frontend/"), f"{url} is not served by the project"
        response = client.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body, url
    # The entry module imports its siblings by relative path; they must be served too.
    script = client.get("/static/frontend/app.js")
    assert "javascript" in script["Content-Type"]
    source = b"".join(script.streaming_content).decode()
    for module in re.findall(r'from "\./([\w.-]+\.js)"', source):
        assert client.get(f"/static/frontend/{module}").status_code == 200, module


def test_page_uses_nothing_from_other_hosts(page: tuple[str, _Collector]) -> None:
    html, _ = page
    assert "http://" not in html and "https://" not in html
