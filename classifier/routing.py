"""Websocket URL routes, mounted by digits_site/asgi.py."""

from django.urls import path

from classifier.consumers import PredictConsumer

PREDICT_PATH = "ws/predict/"

websocket_urlpatterns = [
    path(PREDICT_PATH, PredictConsumer.as_asgi()),
]
