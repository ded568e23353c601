"""Django settings for Digits.

Every setting an operator may change is read from the environment here, and only here, with a
default that suits a developer's machine. The ML core (`classifier.ml`) never reads the
environment: commands and workers pass these values in.

https://docs.djangoproject.com/en/5.2/ref/settings/
"""

import ipaddress
import os
import secrets
from pathlib import Path

import dj_database_url
import redis.exceptions
from django.core.exceptions import ImproperlyConfigured

from classifier.ml.input import MAX_INK_POINTS, MAX_INK_STROKES

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# --- Core Django -------------------------------------------------------------------------------

DEBUG = env_bool("DIGITS_DEBUG", False)

# A real key is required to serve in production (digits_site/asgi.py refuses to start without
# one unless DEBUG is on). Commands that sign nothing (train, evaluate, the worker) get a random
# per-process key so they run without configuration.
SECRET_KEY_FROM_ENV = bool(os.environ.get("DIGITS_SECRET_KEY"))
SECRET_KEY = os.environ.get("DIGITS_SECRET_KEY") or secrets.token_urlsafe(50)

# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts
# Also the websocket origin allow-list (channels.security.websocket.AllowedHostsOriginValidator).
ALLOWED_HOSTS = env_list("DIGITS_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "daphne",  # first, so `runserver` is the ASGI server: https://channels.readthedocs.io/en/stable/installation.html
    # The admin, where people review the users' corrections (docs/feedback.md), and what it needs.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # The training and serving commands (train, train_detector, evaluate, runstack), and the history
    # of the corrections table from before it was an app of its own (classifier/migrations/).
    "classifier",
    # The users' corrections: the table, its admin and the commands that review and retrain on them.
    "classifier.corrections",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # https://whitenoise.readthedocs.io/en/stable/django.html
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions, authentication and messages serve the admin only: the page and the websocket set
    # no cookie and read none.
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # The admin's forms (login, bulk actions) are protected; no other view takes a form.
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "digits_site.urls"
ASGI_APPLICATION = "digits_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                # The admin's templates need these two.
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from the apps' static/ folders, so no `collectstatic` step is needed to run.
# https://whitenoise.readthedocs.io/en/stable/django.html#WHITENOISE_USE_FINDERS
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

USE_TZ = True
TIME_ZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DIGITS_LOG_LEVEL", "INFO")},
}

# --- Redis: Celery broker and channel layer ------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# `runstack` (`make run`) starts a private Redis only when the operator named none.
REDIS_URL_FROM_ENV = bool(os.environ.get("REDIS_URL"))

# `tuned` (the default) runs the service's overrides of kombu, celery-batches and channels_redis
# internals, which take round trips out of every request (classifier/transport/); `stock` runs
# those libraries as they ship: slower batching and replies, and a Redis restart closes the
# websockets, but nothing depends on their private code.
DIGITS_TRANSPORT = env_str("DIGITS_TRANSPORT", "tuned").strip().lower()
if DIGITS_TRANSPORT not in ("tuned", "stock"):
    raise ValueError(f"DIGITS_TRANSPORT must be tuned or stock, not {DIGITS_TRANSPORT!r}.")
TUNED_TRANSPORT = DIGITS_TRANSPORT == "tuned"

# https://channels.readthedocs.io/en/stable/topics/channel_layers.html#redis-channel-layer
CHANNEL_LAYERS = {
    "default": {
        # Tuned: channels_redis with one reader per web process, whose receive reports a lost
        # Redis to the consumer instead of raising: a Redis restart answers the requests in
        # flight with `unavailable` and keeps the sockets.
        "BACKEND": (
            "classifier.transport.channel_layer.ResilientRedisChannelLayer"
            if TUNED_TRANSPORT
            else "channels_redis.core.RedisChannelLayer"
        ),
        "CONFIG": {
            # redis-py 8 times out socket reads after 5 s by default, which aborts the layer's
            # blocking 5 s BZPOPMIN and kills every websocket idle that long
            # (django/channels_redis#422). Reads may take longer than the block, never forever.
            # One retry on a fresh connection: after a Redis restart the pooled connections are
            # dead, and without it the first answer sent on each was lost.
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 15,
                    "socket_connect_timeout": 2,
                    "retry_on_error": [redis.exceptions.ConnectionError],
                }
            ],
            # Keeps tests and several deployments on one Redis apart.
            "prefix": env_str("DIGITS_CHANNEL_PREFIX", "digits"),
            # An unread reply is useless after the client's deadline.
            "expiry": 60,
            "capacity": 1000,
        },
    }
}

# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = REDIS_URL
# Tuned: kombu's Redis transport with fewer round trips: a worker takes a backlog in one and
# acknowledges a batch in one (classifier/transport/broker.py); the storage in Redis is kombu's.
# Stock: the transport the URL names (kombu's own Redis transport).
CELERY_BROKER_TRANSPORT = "classifier.transport.broker:Transport" if TUNED_TRANSPORT else None
# Answers travel over the channel layer, never through a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing fails fast when Redis is gone (the client gets `unavailable`) rather than waiting on
# a dead connection (kombu's default socket timeout is none); the web process's own publisher
# (classifier.transport.publisher) takes the same timeouts.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, float] = {
    "socket_timeout": 10,
    "socket_connect_timeout": 2,
}
# Requests are plain data; nothing a client can influence is ever unpickled.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"

# --- Digits -------------------------------------------------------------------------------------

# The Celery queue inference tasks go to; workers started with `-Q` this name serve it.
DIGITS_INFERENCE_QUEUE = env_str("DIGITS_INFERENCE_QUEUE", "inference")

# Where the served model's weights live; `train --output` writes here by default and running
# workers switch to new weights written here without a restart.
DIGITS_WEIGHTS = Path(
    env_str("DIGITS_WEIGHTS", str(BASE_DIR / "classifier" / "weights" / "digits-cnn.safetensors"))
)

# Where MNIST lives (torchvision's layout: <dir>/MNIST/raw/...). Downloaded there when missing.
DIGITS_DATA_DIR = Path(env_str("DIGITS_DATA_DIR", str(BASE_DIR / "data")))

# --- Database: the users' corrections (docs/feedback.md) -----------------------------------------
# Only corrections live in the database (and the admin's users and sessions): models live in
# files, requests in Redis. The consumer never touches it; workers store corrections, the admin
# and `manage.py feedback` review them.

# https://github.com/jazzband/dj-database-url: postgres://user:password@host:5432/name, or
# sqlite:////absolute/path. By default SQLite in the data folder, so `make run` needs nothing
# installed (runstack creates the folder and applies the migrations); compose.yaml runs PostgreSQL.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DIGITS_DATA_DIR / 'digits.sqlite3'}")
DATABASES = {
    # Connections are kept a minute and checked before reuse: a worker stores a correction now
    # and then, and a database restart must not fail the next store.
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Workers write while the admin reads and updates: WAL lets readers go on during a write,
        # and IMMEDIATE transactions take the write lock at their start, so two writers queue
        # (for `timeout` seconds at most) instead of failing with "database is locked".
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 5,
        **DATABASES["default"].get("OPTIONS", {}),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Set by a deployment whose processes run apart (compose.yaml, deploy/kubernetes): its web servers,
# workers and commands share one database. SQLite is a file of one machine (one pod) of its own,
# where a worker's corrections would be invisible to the admin and to `retrain`, so on it every
# process refuses to start, saying why, rather than each keeping corrections of its own.
DIGITS_SHARED_DATABASE = env_bool("DIGITS_SHARED_DATABASE", False)
if DIGITS_SHARED_DATABASE and DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    raise ImproperlyConfigured(
        "DIGITS_SHARED_DATABASE is set, so the web servers and workers must share one database, "
        f"but the database is SQLite ({DATABASES['default']['NAME']}; DATABASE_URL is "
        f"{'sqlite' if os.environ.get('DATABASE_URL') else 'unset'}): every process would keep "
        "corrections in a file of its own, invisible to the admin and to `retrain`. Set "
        "DATABASE_URL to the PostgreSQL they share (docs/operations.md, Kubernetes)."
    )

# Salt of the hash of a client's address stored with each correction (the address never is):
# it tells corrections from one client apart without saying who. The default, the SECRET_KEY,
# is random per process unless DIGITS_SECRET_KEY is set, so a real deployment sets this (or the
# key) for the hashes of one client to stay the same across restarts and web processes.
DIGITS_FEEDBACK_SALT = env_str("DIGITS_FEEDBACK_SALT", "") or SECRET_KEY
# How long corrections are kept: `manage.py feedback purge` deletes those older than this many
# days unless told otherwise (run it daily, e.g. from cron or a Kubernetes CronJob); 0: no
# default, purge needs --older-than. docs/feedback.md.
DIGITS_FEEDBACK_RETENTION_DAYS = env_int("DIGITS_FEEDBACK_RETENTION_DAYS", 180)
# New corrections one client (one salted address hash) may store in an hour; more are refused
# with `feedback_limit`, so one client cannot fill the table. 0: no cap.
DIGITS_FEEDBACK_PER_HOUR = env_int("DIGITS_FEEDBACK_PER_HOUR", 100)

# "auto" takes CUDA when present, else the CPU.
DIGITS_DEVICE = env_str("DIGITS_DEVICE", "auto")

# How long a client waits for an answer before it gets an error instead (seconds).
DIGITS_REQUEST_TIMEOUT = env_float("DIGITS_REQUEST_TIMEOUT", 5.0)

# --- Serving: websocket -> Celery -> worker -> channel layer ------------------------------------

# Tasks go to DIGITS_INFERENCE_QUEUE (Celery's default queue), so a plain
# `celery -A digits_site worker` serves it without `-Q`.
CELERY_TASK_DEFAULT_QUEUE = DIGITS_INFERENCE_QUEUE

# The worker gathers queued requests into one model call (classifier.transport.batching): up to
# DIGITS_BATCH_SIZE requests. A request with nothing queued behind it goes at once; otherwise the
# batch is checked every DIGITS_BATCH_FLUSH_MS and goes when the queue in Redis is empty, when it
# is full, or when its first request has waited DIGITS_BATCH_MAX_WAIT_MS.
DIGITS_BATCH_SIZE = env_int("DIGITS_BATCH_SIZE", 64)
DIGITS_BATCH_FLUSH_MS = env_float("DIGITS_BATCH_FLUSH_MS", 2.0)
DIGITS_BATCH_MAX_WAIT_MS = env_float("DIGITS_BATCH_MAX_WAIT_MS", 20.0)

# One process, one thread: nothing forks after CUDA is initialised, and the model is loaded once.
# Scale with more worker processes (one per GPU), not with pool concurrency.
CELERY_WORKER_POOL = "solo"
CELERY_WORKER_CONCURRENCY = 1
# Unacknowledged messages a worker may hold. celery-batches buffers them until a flush, so this
# must exceed DIGITS_BATCH_SIZE or batches are silently capped at the prefetch count.
CELERY_WORKER_PREFETCH_MULTIPLIER = 2 * DIGITS_BATCH_SIZE

# CPU threads a worker's PyTorch uses (torch.set_num_threads). One by default: the worker shares
# the machine with the web server and Redis, and PyTorch's spinning thread pool, given more
# threads than it gets cores, turned a 3 ms batch into 270 ms on a busy 2-core machine. 0 leaves
# PyTorch's default (one per core).
DIGITS_TORCH_THREADS = env_int("DIGITS_TORCH_THREADS", 1)
# Threads a worker decodes and preprocesses a batch's images on (classifier.serving.batch).
# One by default: on a busy 2-core machine more did not pay. On a GPU host with cores to spare,
# more keep preprocessing from dwarfing the model call (benchmarks/inference_speed.py measures it).
DIGITS_PREPROCESS_THREADS = env_int("DIGITS_PREPROCESS_THREADS", 1)

# How often (seconds, at most) a worker checks DIGITS_WEIGHTS for new weights before a batch.
DIGITS_RELOAD_INTERVAL = env_float("DIGITS_RELOAD_INTERVAL", 0.5)

# The largest websocket message the ASGI server (uvicorn) accepts; bigger ones close the socket
# before any Python code sees them. It must hold the largest image the service accepts
# (classifier.ml.input.MAX_IMAGE_BYTES) in base64 plus the envelope, so that every smaller
# frame gets an error frame rather than a closed socket (tests/serving/test_protocol.py).
DIGITS_WS_MAX_MESSAGE_BYTES = env_int("DIGITS_WS_MAX_MESSAGE_BYTES", 8 * 1024 * 1024)
# Read by daphne's `runserver` (https://github.com/django/daphne#runserver).
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = DIGITS_WS_MAX_MESSAGE_BYTES

# The most strokes, and points in all, that a request's ink may have (classifier.ml.input holds the
# defaults and why); more is refused with `too_large` before anything is queued.
DIGITS_MAX_INK_STROKES = env_int("DIGITS_MAX_INK_STROKES", MAX_INK_STROKES)
DIGITS_MAX_INK_POINTS = env_int("DIGITS_MAX_INK_POINTS", MAX_INK_POINTS)

# --- Robustness: abuse limits, worker presence, redelivery ----------------------------------------

# Per websocket connection: requests in flight at once, and a token bucket of DIGITS_RATE_LIMIT
# requests a second with bursts of DIGITS_RATE_BURST (every frame takes a token, bad ones too).
# Over either, a request is refused at once with `rate_limited` (never queued); the socket stays
# open. The page sends at most a few a second; 0 turns the rate limit off.
DIGITS_MAX_IN_FLIGHT = env_int("DIGITS_MAX_IN_FLIGHT", 16)
DIGITS_RATE_LIMIT = env_float("DIGITS_RATE_LIMIT", 20.0)
DIGITS_RATE_BURST = env_int("DIGITS_RATE_BURST", 40)
# Open websockets per client address in one web process (0: no limit); more are sent a
# `too_many_connections` error and closed with code 4429. Behind a reverse proxy, set
# DIGITS_BEHIND_PROXY so the address is the client's, not the proxy's.
DIGITS_MAX_CONNECTIONS_PER_CLIENT = env_int("DIGITS_MAX_CONNECTIONS_PER_CLIENT", 32)

# The HTTP API (/api/v1/, classifier.serving.http) applies DIGITS_RATE_LIMIT, DIGITS_RATE_BURST
# and DIGITS_MAX_IN_FLIGHT per client address (it has no connection to count them on): over
# them a request gets 429 with Retry-After. With keys set (comma-separated), POST /api/v1/predict
# wants `Authorization: Bearer <one of them>` (401 without one, 403 with another); unset, it is
# open like the page. Browser pages of the listed origins (`*`: any) may call it (CORS); by
# default none but the site's own.
DIGITS_API_KEYS = env_list("DIGITS_API_KEYS", [])
DIGITS_API_CORS_ORIGINS = env_list("DIGITS_API_CORS_ORIGINS", [])

# Every worker refreshes a presence key in Redis this often (seconds); the key lives three times
# as long, so a worker killed without a word is forgotten within DIGITS_HEARTBEAT_TTL. The web
# side reads the keys before queuing (cached DIGITS_PRESENCE_CACHE seconds) and answers
# `unavailable` at once when no worker is alive; /readyz reports them.
DIGITS_HEARTBEAT_INTERVAL = env_float("DIGITS_HEARTBEAT_INTERVAL", 1.0)
DIGITS_HEARTBEAT_TTL = 3 * DIGITS_HEARTBEAT_INTERVAL
DIGITS_PRESENCE_CACHE = 0.5

# Late acknowledgement: a request is acknowledged once its answer is sent, so a worker killed
# mid-batch leaves its requests unacknowledged in Redis rather than lost. Redis has no consumer
# liveness: an unacknowledged message goes back to the queue once it is DIGITS_REDELIVER_AFTER
# seconds old (kombu's visibility timeout, one hour by default), swept every second by every
# live worker. Half the request deadline leaves another worker time to answer within it; a
# worker still busy with a message that old (heavily overloaded) gets a duplicate, whose second
# answer the consumer drops. `reject_on_worker_lost` covers prefork pools, should one be used.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A batch running when the broker connection drops cannot be acknowledged any more; its messages
# are redelivered (Celery 6's default; a solo pool cannot interrupt the batch itself).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
DIGITS_REDELIVER_AFTER = env_float("DIGITS_REDELIVER_AFTER", max(1.0, DIGITS_REQUEST_TIMEOUT / 2))
CELERY_BROKER_TRANSPORT_OPTIONS.update(
    {
        "visibility_timeout": DIGITS_REDELIVER_AFTER,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # A worker killed during a sweep must not block the others' sweeps for kombu's 5 min.
        "unacked_mutex_expire": 10,
    }
)

# --- Metrics and the status page ----------------------------------------------------------------
# docs/metrics.md; https://prometheus.github.io/client_python/

# Each worker serves its Prometheus metrics over HTTP on this port (on all interfaces), so a
# scraper reaches every worker directly: 0 takes a free port (several workers on one machine,
# tests). A worker whose port is taken logs it and serves requests without metrics.
DIGITS_WORKER_METRICS_PORT = env_int("DIGITS_WORKER_METRICS_PORT", 9101)
# The host name in the metrics URL a worker publishes in its heartbeat (/readyz and the status
# page list it). Empty: the machine's name (socket.getfqdn(), looked up by the worker only); a
# stack on one machine can say 127.0.0.1.
DIGITS_WORKER_METRICS_HOST = env_str("DIGITS_WORKER_METRICS_HOST", "").strip()
# The client networks allowed to read the web's /metrics, /status/ and /status.json and the
# workers' metrics; anyone else gets 403. By default loopback and the private ranges, so the
# public never reads them; `0.0.0.0/0,::/0` opens them to all. The address is the socket's peer,
# or X-Forwarded-For's client with DIGITS_BEHIND_PROXY. A malformed network refuses to start.
DIGITS_METRICS_ALLOWED = env_list(
    "DIGITS_METRICS_ALLOWED",
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
)
for _network in DIGITS_METRICS_ALLOWED:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ValueError(f"DIGITS_METRICS_ALLOWED: {_network!r} is not a network: {_exc}") from None

# --- Production: HTTPS behind a reverse proxy ---------------------------------------------------

# A reverse proxy (nginx, a load balancer, an ingress controller) in front sets X-Forwarded-For
# and X-Forwarded-Proto. With DIGITS_BEHIND_PROXY uvicorn reads them (`--proxy-headers`), but
# only from a peer in DIGITS_TRUSTED_PROXIES, the proxy's networks (`--forwarded-allow-ips`): the
# client address is then the right-most X-Forwarded-For entry outside them (so the per-address
# limits and the metrics allow-list judge clients, not the proxy), and the scheme
# X-Forwarded-Proto's (Django reads it from uvicorn; no SECURE_PROXY_SSL_HEADER, which would trust
# anyone's). Anyone else's headers are ignored, so a client that reaches the web directly cannot
# claim an address. DIGITS_BEHIND_PROXY without DIGITS_TRUSTED_PROXIES, or a value that is not a
# network, refuses to start.
DIGITS_BEHIND_PROXY = env_bool("DIGITS_BEHIND_PROXY", False)
DIGITS_TRUSTED_PROXIES = []
for _network in env_list("DIGITS_TRUSTED_PROXIES", []):
    try:
        # Normalised (host bits cleared): uvicorn takes only exact networks.
        DIGITS_TRUSTED_PROXIES.append(str(ipaddress.ip_network(_network, strict=False)))
    except ValueError as _exc:
        raise ImproperlyConfigured(
            f"DIGITS_TRUSTED_PROXIES: {_network!r} is not a network: {_exc}"
        ) from None
if DIGITS_BEHIND_PROXY and not DIGITS_TRUSTED_PROXIES:
    raise ImproperlyConfigured(
        "DIGITS_BEHIND_PROXY is set but DIGITS_TRUSTED_PROXIES is not: set it to the networks "
        "the reverse proxy connects from (CIDRs, e.g. 10.0.0.0/8), or X-Forwarded-For would be "
        "trusted from every client, which could then claim any address."
    )
# The public site is served over HTTPS (by the proxy): redirect plain HTTP, send HSTS.
DIGITS_HTTPS = env_bool("DIGITS_HTTPS", False)
SECURE_SSL_REDIRECT = DIGITS_HTTPS
SECURE_HSTS_SECONDS = env_int("DIGITS_HSTS_SECONDS", 3600) if DIGITS_HTTPS else 0
# Health probes and metrics scrapes come from inside the network, over plain HTTP, and so may an
# operator's look at the status page (a port forward); DIGITS_METRICS_ALLOWED guards the last.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^status/$", r"^status\.json$"]
# Only the admin sets cookies (its session and CSRF token); they stay on HTTPS.
SESSION_COOKIE_SECURE = DIGITS_HTTPS
CSRF_COOKIE_SECURE = DIGITS_HTTPS
# Django's defaults already send nosniff, Referrer-Policy and COOP; X-Frame-Options: DENY here.
X_FRAME_OPTIONS = "DENY"
