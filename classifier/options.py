"""Command options several `manage.py` commands share, each defined once.

Shared by the `classifier` app's commands (classifier.management: train, train_detector,
evaluate) and the corrections app's (classifier.corrections: retrain), so it lives below both:
Django and the standard library only (docs/decisions/0011-layers.md).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from argparse import ArgumentParser
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.management.base import CommandError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Config = TypeVar("Config", bound="DataclassInstance")


def add_data_dir(parser: ArgumentParser, downloads: bool = False) -> None:
    """`--data-dir`: where MNIST is (DIGITS_DATA_DIR by default); `downloads` when the command
    fetches it there if missing."""
    fetched = "; downloaded there when missing" if downloads else ""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.DIGITS_DATA_DIR,
        help=f"where MNIST is, as <dir>/MNIST/raw/{fetched} "
        f"(default: DIGITS_DATA_DIR, now {settings.DIGITS_DATA_DIR})",
    )


def add_no_download(parser: ArgumentParser) -> None:
    """`--no-download`: fail rather than fetch MNIST when it is missing."""
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading MNIST when it is missing (default: download)",
    )


def add_config_options(
    parser: ArgumentParser, config: type, defaults: dict[str, tuple[Any, str]]
) -> None:
    """One option per field of the dataclass `config`: its help, type and default come from
    the field, so each default lives in one place. `defaults` replaces a field's default with
    (value, how to show it), for the ones an environment setting chooses. A boolean field that
    defaults to True becomes `--no-<name>`, helped by its `off_help` where it has one."""
    hints = typing.get_type_hints(config)
    for field in dataclasses.fields(config):
        option = "--" + field.name.replace("_", "-")
        extra = dict(field.metadata)
        help_text = extra.pop("help")
        default, shown = defaults.get(field.name, (field.default, None))
        if shown is None:
            shown = "none" if default is None or default == "" else str(default)
        kind = hints[field.name]
        if kind is bool:
            if default:
                parser.add_argument(
                    "--no-" + field.name.replace("_", "-"),
                    dest=field.name,
                    action="store_false",
                    help=f"{extra.get('off_help', f'do not {help_text}')} "
                    f"(default: {field.name.replace('_', ' ')})",
                )
            else:
                parser.add_argument(option, action="store_true", help=f"{help_text} (default: off)")
            continue
        if isinstance(kind, types.UnionType):  # `int | None`: the type that is not None
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        parser.add_argument(
            option, type=kind, default=default, help=f"{help_text} (default: {shown})", **extra
        )


def config_from_options(
    config: type[Config], options: Mapping[str, Any], names: Iterable[str] | None = None
) -> Config:
    """The dataclass `config` from the command's options (its fields, or `names` of them); a
    value its checks refuse is a CommandError naming the option ("name must be ..." from the
    dataclass becomes "--name must be ...")."""
    names = [f.name for f in dataclasses.fields(config)] if names is None else list(names)
    try:
        return config(**{name: options[name] for name in names})
    except ValueError as exc:
        name, _, rest = str(exc).partition(" ")
        raise CommandError(f"--{name.replace('_', '-')} {rest}") from exc
