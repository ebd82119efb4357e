"""Help that helps (issue 10 item 8) and the man pages generated from the same sources.

Every subcommand and option has help text; `authmilter --help` and `authmilter SUB --help`
are plain text; authmilter(8) and authmilter.toml(5) render with man(1)/groff without a
warning and name every subcommand, option and config key.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from support import require

from authmilter import cli, manpage
from authmilter.config import tomlwrite
from authmilter.config.schema import Settings, iter_schema

# RST/markdown that must not reach a terminal: ``literal``, `x`, :role:`x`, **bold**, ".. directive"
MARKUP = re.compile(r"`|\*\*|^\s*\.\. ", re.M)   # a :role:`x` has backticks too


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str | None, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return {name: (helps.get(name), p) for name, p in action.choices.items()}
    raise AssertionError("authmilter has no subcommands")


def options_without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]


def help_output(argv: list[str]) -> str:
    """What `authmilter ARGV` prints (argparse exits 0 after --help)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 0
    return out.getvalue()


def test_every_subcommand_and_option_has_help() -> None:
    parser = cli.build_parser()
    commands = subcommands(parser)
    assert set(commands) == set(cli.HANDLERS), "a handler without a subcommand or the reverse"
    missing = [f"authmilter {o}" for o in options_without_help(parser)]
    for name, (helptext, sub) in commands.items():
        if not (helptext or "").strip():
            missing.append(f"authmilter {name} (the command itself)")
        if not (sub.description or "").strip():
            missing.append(f"authmilter {name} --help has no description")
        missing += [f"authmilter {name} {o}" for o in options_without_help(sub)]
    assert not missing, "no help text: " + ", ".join(missing)


def test_help_output_is_plain_text() -> None:
    outputs = {"authmilter --help": help_output(["--help"])}
    for name in subcommands(cli.build_parser()):
        outputs[f"authmilter {name} --help"] = help_output([name, "--help"])
    for argv, text in outputs.items():
        assert text.strip(), argv
        found = MARKUP.search(text)
        assert found is None, f"{argv} shows markup {found.group(0)!r}:\n{text}"


def test_markup_check_catches_rst() -> None:
    """The check above is not vacuous: the old description would have failed it."""
    assert MARKUP.search("Command line: ``authmilter COMMAND ...``.")
    assert MARKUP.search("see :option:`--config`")
    assert not MARKUP.search("config file (default /etc/authmilter/authmilter.toml): unix:/path, 0 = two per CPU")


def test_documented_exit_statuses_are_the_handlers_own() -> None:
    from authmilter import keys, verify
    from authmilter.milter import server
    from authmilter.policy import Action

    documented = {name: {what.split(":")[0]: code for code, what in codes if code >= 0}
                  for name, codes in cli.EXIT_STATUS.items()}
    assert {a.value: c for a, c in verify.EXIT_FOR.items()} == \
        {k: v for k, v in documented["verify"].items() if k != "error"}
    assert set(verify.EXIT_FOR) == set(Action)
    testkey_codes = {code for code, _ in cli.EXIT_STATUS["testkey"] if code >= 0}
    assert testkey_codes == {v for k, v in vars(keys).items() if k.startswith("EXIT_")}
    run_codes = {code for code, _ in cli.EXIT_STATUS["run"]}
    assert {server.EXIT_CONFIG, server.EXIT_FAILURE} <= run_codes
    assert "exit status: 0 accept, 3 quarantine, 4 reject, 5 tempfail" in help_output(["verify", "--help"])


# ---------------------------------------------------------------------------------------
# man pages


def render(source: str, tmp_path: Path) -> str:
    """`man -l` with warnings on; fails on any warning groff prints."""
    require(shutil.which("man") is not None and shutil.which("groff") is not None,
            "man and groff missing (make test-deps installs man-db and groff-base)")
    page = tmp_path / "page"
    page.write_text(source)
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    env.pop("MAN_KEEP_FORMATTING", None)
    proc = subprocess.run(["man", "--warnings=all", "-E", "UTF-8", "-l", str(page)], capture_output=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()
    groff = subprocess.run(["groff", "-man", "-ww", "-b", "-z", str(page)], capture_output=True, timeout=60,
                           check=False)
    assert groff.returncode == 0 and not groff.stderr, groff.stderr.decode()
    return proc.stdout.decode()


def words(text: str) -> str:
    """Text as one line: filled lines joined, a line broken after a hyphen rejoined."""
    return re.sub(r"- ", "-", " ".join(text.split()))


def man_output(section: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["man", "--section", section]) == 0
    return out.getvalue()


def test_man_8_renders_and_names_every_subcommand_and_option(tmp_path: Path) -> None:
    text = render(man_output("8"), tmp_path)
    assert text.startswith("AUTHMILTER(8)")
    sections = re.split(r"^(?=[A-Z][A-Z ]+$)", text, flags=re.M)
    commands_part = next(s for s in sections if s.startswith("COMMANDS"))
    parser = cli.build_parser()
    for name, (_helptext, sub) in subcommands(parser).items():
        assert re.search(rf"^   {re.escape(name)}$", commands_part, re.M), f"no subsection for {name}"
        part = re.split(r"\n   (?=\S)", commands_part.split(f"\n   {name}\n", 1)[1], maxsplit=1)[0]
        flat = words(part)
        assert words(sub.description or "") in flat, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue            # -h/--help: once, under OPTIONS
            for option in action.option_strings:
                assert re.search(rf"(^|[ ,]){re.escape(option)}\b", part, re.M), f"{name} {option} missing"
            if action.help:
                assert words(manpage.help_text(sub, action)) in flat, f"{name}: help of {action.dest} missing"
    exit_part = next(s for s in sections if s.startswith("EXIT STATUS"))
    for name, codes in cli.EXIT_STATUS.items():
        for code, what in codes:
            if code >= 0:
                assert re.search(rf"^       {code}\s+{re.escape(what.split()[0])}", exit_part, re.M), (name, code)
    for part in ("FILES", "SEE ALSO", "SIGNALS", "SYNOPSIS"):
        assert any(s.startswith(part) for s in sections), part
    assert "authmilter.toml(5)" in text


def test_man_5_renders_and_documents_every_key(tmp_path: Path) -> None:
    text = render(man_output("5"), tmp_path)
    assert text.startswith("AUTHMILTER.TOML(5)")
    sections = {s.split("\n", 1)[0]: s for s in re.split(r"^(?=\S)", text, flags=re.M) if s.strip()}
    hints = typing.get_type_hints(Settings)
    documented = 0
    for key, default, doc in iter_schema():
        section, _, name = key.rpartition(".")
        part = sections[f"[{section}]" if section else "TOP-LEVEL KEYS"]
        entry = re.search(rf"^       {re.escape(name)} \((\w[\w ]*)\)\n(.*?)(?=^       \S|\Z)", part, re.M | re.S)
        assert entry, f"{key} not documented"
        flat = words(entry.group(2))
        assert words(doc.replace("`", ""))[1:] in flat, f"{key}: doc text missing"
        assert f"Default: {words(tomlwrite.value(default))}" in flat, key
        documented += 1
    for f in fields(Settings):
        if is_dataclass(hints[f.name]):
            assert f"[{f.name}]" in sections, f.name
    assert documented == len(list(iter_schema())) > 100


def test_man_sources_are_the_schema_not_a_copy() -> None:
    """A key added to the schema appears in the page without editing manpage.py."""
    keys = [(s, k) for s, _, entries in manpage.schema_sections() for k, *_ in entries]
    assert len(keys) == len(list(iter_schema()))
    assert ("dns", "servers") in keys and ("", "socket") in keys


def test_python_m_authmilter_manpage_prints_the_same_page() -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1767225600"}
    out = subprocess.run([sys.executable, "-m", "authmilter.manpage", "5"], capture_output=True, env=env,
                         check=True, timeout=60).stdout.decode()
    assert out.startswith('.TH AUTHMILTER.TOML 5 "2026-01-01"')
    assert out.split("\n", 1)[1] == man_output("5").split("\n", 1)[1]
