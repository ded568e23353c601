"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digits_site.settings")
# Initialise Django (apps, settings) before importing anything that uses models or settings.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from classifier.serving import http  # noqa: E402
from classifier.serving.routing import websocket_urlpatterns  # noqa: E402

# A random per-process key would sign nothing that survives a restart or a second web process;
# serving in production needs a real one (`make run` turns DEBUG on, which needs none).
if not settings.DEBUG and not settings.SECRET_KEY_FROM_ENV:
    raise ImproperlyConfigured(
        "Set DIGITS_SECRET_KEY to serve with DEBUG off (or DIGITS_DEBUG=1 for development)."
    )

application = ProtocolTypeRouter(
    {
        # /api/v1/ (the HTTP API) before Django: it refuses a body too large before reading it.
        "http": http.mount(django_asgi_app),
        # Browsers send an Origin header; only pages served from ALLOWED_HOSTS may connect.
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
