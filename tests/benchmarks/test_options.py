"""The benchmarks' options: every runnable benchmark builds its parser from `benchmarks.options`,
every flag's help states its default, and a shared flag has one default everywhere."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import benchmarks
from benchmarks import options


class Parsed(Exception):
    """Raised instead of parsing: carries the parser `main` built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


class _Caught(argparse.ArgumentParser):
    def parse_args(self, *args, **kwargs):
        raise Parsed(self)


def runnable() -> list[str]:
    """The benchmarks' modules that run as `python -m benchmarks.NAME`."""
    names = []
    for module in pkgutil.iter_modules(benchmarks.__path__):
        spec = importlib.util.find_spec(f"benchmarks.{module.name}")
        assert spec is not None and spec.origin is not None
        if 'if __name__ == "__main__":' in Path(spec.origin).read_text(encoding="utf-8"):
            names.append(module.name)
    return sorted(names)


def parser_of(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(
        options, "parser", lambda doc: _Caught(description=(doc or "").split("\n\n")[0])
    )
    with pytest.raises(Parsed) as parsed:
        module.main()
    return parsed.value.parser


def test_the_load_benchmark_and_the_others_are_runnable():
    assert {"load", "direct_server", "ink_accuracy", "feedback_loop"} <= set(runnable())
    assert "options" not in runnable() and "load_stack" not in runnable()


@pytest.mark.parametrize("name", runnable())
def test_every_flag_states_its_default(name, monkeypatch):
    parser = parser_of(name, monkeypatch)
    assert parser.description, f"{name}: its docstring's first paragraph describes it"
    missing = [
        action.option_strings or [action.dest]
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and "default" not in (action.help or "")
    ]
    assert not missing, f"benchmarks.{name}: no default in the help of {missing}"


def test_a_shared_flag_has_one_default(monkeypatch):
    defaults: dict[str, set[str]] = {}
    for name in runnable():
        for action in parser_of(name, monkeypatch)._actions:
            if "--data-dir" in action.option_strings:
                defaults.setdefault("--data-dir", set()).add(str(action.default))
    assert defaults["--data-dir"] == {str(options.DEFAULT_DATA_DIR)}
