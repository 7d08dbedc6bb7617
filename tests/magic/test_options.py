"""Cell options, subcommand parsing, and help text for every option and subcommand."""

from __future__ import annotations

import argparse

import pytest
from IPython.core.error import UsageError

from saga_magic.magic.options import (
    SUBCOMMANDS,
    CellOptions,
    cell_arguments,
    cell_help,
    parse_cell_options,
    parse_subcommand,
    subcommand_help,
    usage_lines,
    wants_help,
)
from saga_magic.magics import CopilotMagics


@cell_arguments
def _cell(line: str, cell: str) -> None:
    """Ask."""


def test_defaults() -> None:
    assert parse_cell_options(_cell, "") == CellOptions()


def test_every_option() -> None:
    line = (
        "--user bob --model gpt-x --system 'be brief' --max-tokens 64 --temperature 0.5 "
        "--format json -o answer --no-stream --new"
    )
    assert parse_cell_options(_cell, line) == CellOptions(
        user="bob",
        model="gpt-x",
        system="be brief",
        max_tokens=64,
        temperature=0.5,
        format="json",
        output="answer",
        stream=False,
        new=True,
    )
    assert parse_cell_options(_cell, "--output res").output == "res"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("--max-tokens many", "invalid int value"),
        ("--max-tokens 0", "--max-tokens must be a positive integer"),
        ("--temperature 3", "--temperature must be between 0 and 2"),
        ("--temperature nan", "--temperature must be between 0 and 2"),
        ("--format yaml", "--format must be one of markdown, text, code, json"),
        ("-o 1abc", "-o/--output needs a Python variable name"),
        ("-o class", "-o/--output needs a Python variable name"),
        ("--user ''", "--user must not be empty"),
        ("--system 'unclosed", "cannot parse the options"),
        ("positional", "unrecognized arguments: positional"),
    ],
)
def test_bad_options_are_one_line_usage_errors(line: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_cell_options(_cell, line)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


def test_every_cell_option_has_help() -> None:
    parser = CopilotMagics.copilot_cell.parser
    actions = _actions(parser)
    flags = {flag for action in actions for flag in action.option_strings}
    assert {
        "--user",
        "--model",
        "--system",
        "--max-tokens",
        "--temperature",
        "--format",
        "-o",
        "--output",
        "--no-stream",
        "--new",
    } <= flags
    for action in actions:
        assert len(action.help or "") > 10, action.option_strings
    doc = CopilotMagics.copilot_cell.__doc__
    assert doc is not None
    assert "%%copilot [--user USER] [--model MODEL]" in doc
    assert "--no-stream" in doc
    assert "{In[3]}" in doc


def test_every_subcommand_and_its_options_have_help() -> None:
    assert set(SUBCOMMANDS) == {
        "status",
        "login",
        "logout",
        "reset",
        "memory",
        "config",
        "log",
        "sandbox",
        "help",
    }
    for name, sub in SUBCOMMANDS.items():
        assert len(sub.summary) > 10, name
        for action in _actions(sub.parser):
            assert len(action.help or "") > 10, (name, action.dest)
        assert name in subcommand_help()
        assert f"%copilot {name}" in subcommand_help(name)
    doc = CopilotMagics.copilot_line.__doc__
    assert doc is not None
    assert all(f"%copilot {name}" in doc for name in SUBCOMMANDS)
    assert usage_lines() == doc


@pytest.mark.parametrize(
    ("line", "name", "attrs"),
    [
        ("", "help", {"topic": None}),
        ("--help", "help", {"topic": None}),
        ("help", "help", {"topic": None}),
        ("help login", "help", {"topic": "login"}),
        ("login -h", "help", {"topic": "login"}),
        ("status", "status", {}),
        ("login --user bob", "login", {"user": "bob"}),
        ("logout", "logout", {"user": None}),
        ("reset --all", "reset", {"all": True, "user": None}),
        ("memory --turns 3", "memory", {"turns": 3}),
        ("log -n 5", "log", {"n": 5}),
        ("log", "log", {"n": 20}),
        (
            "sandbox --script chat 429:retry_after=1 ok",
            "sandbox",
            {"script": ["chat", "429:retry_after=1", "ok"], "stop": False, "reset": False},
        ),
    ],
)
def test_parse_subcommand(line: str, name: str, attrs: dict[str, object]) -> None:
    parsed_name, args = parse_subcommand(line)
    assert parsed_name == name
    for key, value in attrs.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("frobnicate", "unknown subcommand 'frobnicate'"),
        ("log -n lots", "invalid int value"),
        ("status --verbose", "unrecognized arguments"),
        ("login --user 'x", "cannot parse the options"),
    ],
)
def test_bad_subcommands(line: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_subcommand(line)


def test_help_texts_have_no_rst_marker_and_cell_help_is_detected() -> None:
    for name in SUBCOMMANDS:
        assert not subcommand_help(name).startswith("::")
    assert wants_help("--help")
    assert wants_help("--user bob -h")
    assert not wants_help("--user bob")
    text = cell_help(CopilotMagics.copilot_cell)
    assert text.startswith("  %%copilot [--user USER]")
    assert "deployments URL it replaces the URL's deployment" in " ".join(text.split())


def test_new_subcommand_options() -> None:
    assert parse_subcommand("memory --chars 500")[1].chars == 500
    assert parse_subcommand("log --event retry -n 3")[1].event == "retry"
    assert parse_subcommand("log")[1].event is None


@pytest.mark.parametrize("line", ["--user=--", "-o--", "--max-tokens=--", "--system=--"])
def test_an_attached_double_dash_is_a_usage_error(line: str) -> None:
    with pytest.raises(UsageError, match="needs a value"):
        parse_cell_options(_cell, line)


@pytest.mark.parametrize("line", ["log --event=--", "log -n--", "memory --turns=--"])
def test_an_attached_double_dash_in_a_subcommand_is_a_usage_error(line: str) -> None:
    with pytest.raises(UsageError, match="needs a value"):
        parse_subcommand(line)


def test_list_options_still_take_lists() -> None:
    name, args = parse_subcommand("sandbox --script chat 429 ok")
    assert (name, args.script) == ("sandbox", ["chat", "429", "ok"])
