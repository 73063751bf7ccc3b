"""docs/cli.md documents every subcommand and every option of the `edge-colbert` parser."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edge_colbert.cli import build_parser

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no subcommands")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


def _section(name: str) -> str:
    match = re.search(rf"^## `{name}\b.*?(?=^## |\Z)", DOCS, flags=re.M | re.S)
    assert match, f"docs/cli.md has no section headed ## `{name} ...`"
    return match.group(0)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_has_a_section_with_an_example(name: str) -> None:
    section = _section(name)
    assert f"edge-colbert {name} " in section, f"the {name} section shows no example command"


@pytest.mark.parametrize(
    ("name", "option"),
    sorted(
        (name, option)
        for name, sub in _subcommands().items()
        for option in _options(sub)
        if option not in _options(build_parser())  # the shared options are documented once
    ),
)
def test_every_subcommand_option_is_documented_in_its_section(name: str, option: str) -> None:
    if option in ("-h", "--help"):
        assert "--help" in DOCS
        return
    assert f"`{option}" in _section(name), f"`{name} {option}` is not in its docs/cli.md section"


@pytest.mark.parametrize("option", _options(build_parser()))
def test_every_global_option_is_documented(option: str) -> None:
    assert f"`{option}" in DOCS, f"global option {option} is missing from docs/cli.md"


def test_every_documented_command_exists() -> None:
    documented = set(re.findall(r"^## `(\w+)", DOCS, flags=re.M))
    assert documented == set(_subcommands())
