"""Every place the service overrides a library's internals, and the versions they were made for.

Each module here replaces a private part of kombu, Celery, celery-batches, channels or
channels_redis (or, for the publisher, writes their storage format itself) to take round trips
and CPU out of the serving path; each docstring names the upstream version and code it
overrides, why, and what it measured. They are switched on together by `DIGITS_TRANSPORT=tuned`
(the default); `DIGITS_TRANSPORT=stock` runs the libraries as they ship (digits_site/settings.py),
but for the consumer's `dispatch` (consumer.py), which changes nothing on the wire and skips a
database hop the consumer has no use for, under both.

An override of private code breaks silently when its library changes, so pyproject.toml pins
each library to the minor version below, and `version_problems()` (run by the tests and logged
by a starting worker) names every override whose library is installed at another version.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# Distribution -> (the minor version the overrides are tested against, what overrides it).
TESTED_VERSIONS: dict[str, tuple[str, str]] = {
    "kombu": (
        "5.7",
        "classifier.transport.broker (Channel._brpop_read, QoS.append/ack) and "
        "classifier.transport.publisher (kombu's Redis message format)",
    ),
    "celery": (
        "5.6",
        "classifier.transport.batching (the worker's strategy and timer) and "
        "classifier.transport.publisher (send_task's message)",
    ),
    "celery-batches": ("0.11", "classifier.transport.batching (Batches._tref/_buffer/_do_flush)"),
    "channels": (
        "4.3",
        "classifier.transport.channel_layer and replies (the layer's API) and "
        "classifier.transport.consumer (AsyncConsumer.dispatch)",
    ),
    "channels-redis": (
        "4.3",
        "classifier.transport.channel_layer (receive, the reader) and "
        "classifier.transport.replies (the send script: the layer's storage)",
    ),
}


def minor(full: str) -> str:
    """ "5.7.0" -> "5.7"."""
    return ".".join(full.split(".")[:2])


def version_problems(installed: dict[str, str] | None = None) -> list[str]:
    """One sentence per override whose library is missing or at an untested minor version.

    `installed` maps distribution names to versions (default: what is installed here).
    """
    problems = []
    for name, (tested, override) in TESTED_VERSIONS.items():
        if installed is not None:
            found = installed.get(name)
        else:
            try:
                found = version(name)
            except PackageNotFoundError:
                found = None
        if found is None:
            problems.append(f"{name} is not installed; {override} needs {tested}.x.")
        elif minor(found) != tested:
            problems.append(
                f"{name} {found} is installed, but {override} overrides its internals as of "
                f"{tested}.x: check the override against the new release, then move the pin "
                "in pyproject.toml and TESTED_VERSIONS together (or run DIGITS_TRANSPORT=stock)."
            )
    return problems
