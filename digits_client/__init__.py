"""The Digits HTTP API's client: `Client(url).predict(path_or_image)` and the `digits` command.

Standard library only, so it runs wherever Python 3.11 does without the service installed.
"""

from digits_client.client import Client, DigitsError

__all__ = ["Client", "DigitsError"]
