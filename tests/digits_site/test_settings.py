"""Production settings come from the environment: safe when nothing is set, development
defaults only when asked for (`make run` sets DIGITS_DEBUG=1), and Django's deployment check
passes for a production configuration except for two choices that are the operator's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

SHOW = """
import json, django
from django.conf import settings
django.setup()
from classifier.management.devstack import web_argv
names = {names!r}
values = {{n: getattr(settings, n, None) for n in names}}
values["web_argv"] = web_argv("127.0.0.1", 8000)
print(json.dumps(values, default=str))
"""
PRODUCTION = {"DIGITS_SECRET_KEY": "x" * 20 + "-production-key-" + "y" * 30}


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without any DIGITS_* or Redis setting, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITS_", "REDIS_"))}
    return {**base, "DJANGO_SETTINGS_MODULE": "digits_site.settings", **env}


def settings_with(*names: str, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SHOW.format(names=names)],
        cwd=REPO,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def deploy_check(**env: str) -> set[str]:
    """The ids of the warnings `manage.py check --deploy` reports."""
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return set(re.findall(r"\((security\.\w+)\)", done.stdout + done.stderr))


def test_with_nothing_set_debug_is_off_and_https_is_not_assumed() -> None:
    values = settings_with(
        "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER",
        "SECRET_KEY_FROM_ENV", "X_FRAME_OPTIONS",
    )  # fmt: skip
    assert values["DEBUG"] is False
    assert values["SECRET_KEY_FROM_ENV"] is False  # so asgi.py refuses to serve (test_asgi)
    assert values["SECURE_SSL_REDIRECT"] is False and values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["X_FRAME_OPTIONS"] == "DENY"
    assert "--proxy-headers" not in values["web_argv"]  # X-Forwarded-For is not trusted


@pytest.mark.parametrize(
    ("value", "debug"), [("1", True), ("true", True), ("0", False), ("", False)]
)
def test_debug_only_when_asked_for(value: str, debug: bool) -> None:
    assert settings_with("DEBUG", DIGITS_DEBUG=value)["DEBUG"] is debug


def test_behind_an_https_proxy() -> None:
    values = settings_with(
        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER",
        "SECURE_REDIRECT_EXEMPT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        DIGITS_BEHIND_PROXY="1", DIGITS_TRUSTED_PROXIES="10.0.0.0/8", DIGITS_HTTPS="1",
        DIGITS_HSTS_SECONDS="600",
    )  # fmt: skip
    # The scheme comes from uvicorn, which believes X-Forwarded-Proto from the trusted proxies
    # only (tests/digits_site/test_proxy.py); Django's header setting would believe anyone.
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["SECURE_SSL_REDIRECT"] is True and values["SECURE_HSTS_SECONDS"] == 600
    assert values["SESSION_COOKIE_SECURE"] is values["CSRF_COOKIE_SECURE"] is True
    # Probes and metrics scrapes speak plain HTTP from inside the network; the redirect spares
    # them (and the status page, which DIGITS_METRICS_ALLOWED guards), never the public pages.
    exempt = values["SECURE_REDIRECT_EXEMPT"]
    inside = ["readyz", "healthz", "metrics", "status/", "status.json"]
    assert all(any(re.match(p, path) for p in exempt) for path in inside)
    assert all(any(re.match(p, path) for path in inside) for p in exempt)
    assert not any(re.match(p, path) for p in exempt for path in ["", "ws/predict/", "statusXjson"])
    assert "--proxy-headers" in values["web_argv"]  # the per-address limit counts clients


def test_the_limits_and_the_redelivery_come_from_the_environment() -> None:
    names = (
        "DIGITS_RATE_LIMIT", "DIGITS_RATE_BURST", "DIGITS_MAX_IN_FLIGHT",
        "DIGITS_MAX_CONNECTIONS_PER_CLIENT", "DIGITS_REDELIVER_AFTER",
        "CELERY_BROKER_TRANSPORT_OPTIONS", "CELERY_TASK_ACKS_LATE",
    )  # fmt: skip
    defaults = settings_with(*names)
    assert defaults["DIGITS_RATE_LIMIT"] == 20.0 and defaults["DIGITS_RATE_BURST"] == 40
    assert defaults["DIGITS_MAX_IN_FLIGHT"] == 16
    assert defaults["DIGITS_MAX_CONNECTIONS_PER_CLIENT"] == 32
    assert defaults["CELERY_TASK_ACKS_LATE"] is True
    # Redelivered within the client's deadline (5 s), not after kombu's default hour.
    assert defaults["DIGITS_REDELIVER_AFTER"] == 2.5
    assert defaults["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] == 2.5
    changed = settings_with(
        *names,
        DIGITS_RATE_LIMIT="0", DIGITS_MAX_IN_FLIGHT="4", DIGITS_REQUEST_TIMEOUT="30",
    )  # fmt: skip
    assert changed["DIGITS_RATE_LIMIT"] == 0.0 and changed["DIGITS_MAX_IN_FLIGHT"] == 4
    assert changed["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] == 15.0


def test_the_deploy_check_passes_for_production_but_for_the_operators_choices() -> None:
    """With a real key and HTTPS behind a proxy, only HSTS for subdomains (W005) and preload
    (W021) remain: both bind other sites of the domain, so they are left to the operator."""
    https = {
        **PRODUCTION,
        "DIGITS_HTTPS": "1",
        "DIGITS_BEHIND_PROXY": "1",
        "DIGITS_TRUSTED_PROXIES": "10.0.0.0/8",
    }
    assert deploy_check(**https) == {"security.W005", "security.W021"}
    # Plain HTTP (a proxy that terminates TLS must set DIGITS_HTTPS): no HSTS, no redirect,
    # no cookie marked secure (the admin's session and CSRF cookies).
    assert deploy_check(**PRODUCTION) == {
        "security.W004",
        "security.W008",
        "security.W012",
        "security.W016",
    }
    # Development mode is reported as such.
    assert "security.W018" in deploy_check(**PRODUCTION, DIGITS_DEBUG="1")


@pytest.mark.parametrize(
    ("value", "layer", "broker"),
    [
        (None, "classifier.transport.channel_layer.ResilientRedisChannelLayer", True),
        ("tuned", "classifier.transport.channel_layer.ResilientRedisChannelLayer", True),
        ("stock", "channels_redis.core.RedisChannelLayer", False),
    ],
)
def test_the_transport_switch_chooses_the_overrides_or_the_stock_libraries(
    value: str | None, layer: str, broker: bool
) -> None:
    env = {} if value is None else {"DIGITS_TRANSPORT": value}
    values = settings_with("CHANNEL_LAYERS", "CELERY_BROKER_TRANSPORT", **env)
    assert values["CHANNEL_LAYERS"]["default"]["BACKEND"] == layer
    expected = "classifier.transport.broker:Transport" if broker else None
    assert values["CELERY_BROKER_TRANSPORT"] == expected


def test_an_unknown_transport_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import digits_site.settings"],
        cwd=REPO,
        env=clean_env(DIGITS_TRANSPORT="fast"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DIGITS_TRANSPORT must be tuned or stock" in done.stderr
