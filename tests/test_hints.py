"""Every fix hint podrun prints names something that exists.

The hints are found in podrun's own sources: a ``podrun ...`` command quoted in a message or
docstring ('podrun jobs ls', `podrun jobs attach ID`, "next: podrun images push ..."), a
``python -m podrun...`` module, and an ``@podrun.remote(option=...)``. Each command must
answer ``--help`` with exit status 0, each module must exist, each option must be one that
``podrun.remote`` takes. A hint written wrong (``podrun image build``) fails here.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import podrun
from podrun.cli import app

SOURCES = sorted((Path(podrun.__file__).parent).rglob("*.py"))
COMMAND = re.compile(r"(?:['`]|: )podrun((?: [a-z][a-z|-]*)+)")
MODULE = re.compile(r"python -m (podrun[\w.]*)")
OPTION = re.compile(r"podrun\.remote\((\w+)=")


def _found(pattern: re.Pattern[str]) -> dict[str, str]:
    """Each match (``|`` alternatives expanded) -> the first file:line it appears in."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in pattern.finditer(line):
                words = [word.split("|") for word in match.group(1).split()]
                for combination in itertools.product(*words):
                    found.setdefault(" ".join(combination), f"{path.name}:{number}")
    return found


COMMANDS = _found(COMMAND)


def test_the_hints_are_found() -> None:
    # The scan itself works: hints known to be in the sources are among those checked.
    assert {"jobs attach", "jobs ls", "images build", "images push", "images prepare"} <= set(COMMANDS), sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_hinted_command_answers_help(command: str) -> None:
    done = CliRunner().invoke(app, [*command.split(), "--help"])
    assert done.exit_code == 0, f"'podrun {command}' (hinted at {COMMANDS[command]}) is no command: {done.output}"


def test_each_hinted_module_exists() -> None:
    modules = _found(MODULE)
    assert "podrun.emulator" in modules
    for name, where in modules.items():
        assert importlib.util.find_spec(name) is not None, f"'python -m {name}' (hinted at {where}) does not exist"


def test_each_hinted_remote_option_exists() -> None:
    options = _found(OPTION)
    assert {"wheels", "modules"} <= set(options), options
    accepted = set(inspect.signature(podrun.remote).parameters)
    for name, where in options.items():
        assert name in accepted, f"@podrun.remote({name}=...) (hinted at {where}) is not an option of podrun.remote"
