"""Websocket URL routes, mounted by digits_site/asgi.py."""

from django.urls import path

from classifier.serving.consumers import PredictConsumer
from classifier.serving.protocol import PREDICT_PATH

websocket_urlpatterns = [
    path(PREDICT_PATH, PredictConsumer.as_asgi()),
]
