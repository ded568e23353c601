"""The drawing page. Everything it does happens in the browser and over the websocket."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from classifier.serving.protocol import PREDICT_PATH


def index(request: HttpRequest) -> HttpResponse:
    # The page opens its socket at this path on its own host (ws:// or wss:// as the page).
    return render(
        request,
        "frontend/index.html",
        {"ws_path": "/" + PREDICT_PATH, "digits": range(10)},
    )
