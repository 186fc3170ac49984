"""Every `s3rs ...` example in README.md and docs/*.md names real commands and options.

Examples are the lines of fenced code blocks that start with `s3rs ` or `$ s3rs ` (indented
continuation lines starting with `[` or `-`, and lines ending in `\\`, are joined). Each one is
parsed against the real click tree, without running it: a full example must parse completely
(command path, options, values); a synopsis (it has `[`, `|` or `...`) must name an existing
command path and only options that command has. `--help` examples, and `--help` of every
command path the docs name, run with CliRunner and must exit 0.

PENDING lists command paths documented before they exist. While a pending path does not
resolve, its examples are allowed; once it exists they are checked like the rest.
"""

from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from s3rs_dagster.cli import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PENDING: set[tuple[str, ...]] = set()
SHELL_OPERATORS = {">", ">>", "<", "|", "||", "&&", ";", "&", "2>", "2>&1"}
_FENCE = re.compile(r"^\s*(```|~~~)")
_CONTINUATION = re.compile(r"^\s+[\[-]")


@dataclass(frozen=True)
class Example:
    file: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}: {self.text}"

    @property
    def synopsis(self) -> bool:
        return any(mark in self.text for mark in ("[", "|", "..."))


def examples() -> list[Example]:
    found: list[Example] = []
    for file in DOCS:
        lines = file.read_text().splitlines()
        fenced = False
        index = 0
        while index < len(lines):
            line = lines[index]
            index += 1
            if _FENCE.match(line):
                fenced = not fenced
                continue
            stripped = line.strip().removeprefix("$ ")
            if not fenced or not stripped.startswith("s3rs "):
                continue
            number, text = index, stripped
            while index < len(lines) and (text.endswith("\\") or _CONTINUATION.match(lines[index])):
                text = text.removesuffix("\\").rstrip() + " " + lines[index].strip()
                index += 1
            found.append(Example(file, number, text))
    return found


def tokens(example: Example) -> list[str]:
    try:
        if example.synopsis:  # `|` and `[...]` are notation here, not shell
            words = shlex.split(example.text, comments=True)
        else:
            lexer = shlex.shlex(example.text, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
    except ValueError as exc:
        pytest.fail(f"{example.where}\n  cannot be split like a shell would: {exc}")
    for index, word in enumerate(words):  # the command ends at a redirection or a pipe
        if not example.synopsis and word in SHELL_OPERATORS:
            words = words[:index]
            break
    return words[1:]  # without "s3rs"


def resolve(example: Example, args: list[str]) -> tuple[tuple[str, ...], click.Command, bool]:
    """The command path the words name, its command, and whether it is still pending.

    In a synopsis, bracketed parts are optional and do not name the command; an upper-case
    placeholder (COMMAND) ends the path.
    """
    if example.synopsis:
        text = " ".join(args)
        while re.search(r"\[[^\[\]]*\]", text):
            text = re.sub(r"\[[^\[\]]*\]", " ", text)
        args = text.split()
    command: click.Command = cli
    path: tuple[str, ...] = ()
    words = iter(args)
    for word in words:
        if not isinstance(command, click.Group) or re.fullmatch(r"[A-Z][A-Z_]*|\.\.\.", word):
            break
        if word.startswith("-"):
            if command is cli and word in ("--config", "--log-dir"):
                next(words, None)  # its value
            continue
        sub = command.commands.get(word)
        if sub is None:
            if any((*path, word) == pending[: len(path) + 1] for pending in PENDING):
                return (*path, word), command, True
            pytest.fail(
                f"{example.where}\n  unknown command {' '.join((*path, word))!r}; "
                f"{' '.join(path) or 's3rs'} has: {', '.join(sorted(command.commands))}"
            )
        command, path = sub, (*path, word)
    return path, command, False


def options_of(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def check_synopsis(example: Example, args: list[str]) -> None:
    path, command, pending = resolve(example, args)
    if pending:
        return
    allowed = options_of(command) | options_of(cli)
    for option in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", " ".join(args)):
        if option not in allowed:
            pytest.fail(
                f"{example.where}\n  {option} is not an option of `s3rs {' '.join(path)}`; "
                f"it has: {', '.join(sorted(options_of(command) - {'-h', '--help'}))}"
            )


def unparsed(context: click.Context) -> list[str]:
    """The words a group's context left for its subcommand (click 8.2 moves them to `args`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*context.protected_args, *context.args]


def check_full(example: Example, args: list[str]) -> None:
    path, _, pending = resolve(example, args)
    if pending:
        return
    try:
        context = cli.make_context("s3rs", list(args))
        command: click.Command = cli
        rest = unparsed(context)
        while isinstance(command, click.Group) and rest:
            _name, sub, rest = command.resolve_command(context, rest)
            assert sub is not None
            context = sub.make_context(_name or sub.name or "", rest, parent=context)
            command = sub
            rest = unparsed(context) if isinstance(sub, click.Group) else []
    except click.exceptions.Exit:
        return  # --help / --version
    except click.ClickException as exc:
        pytest.fail(f"{example.where}\n  does not parse as `s3rs {' '.join(path)}`: {exc}")


EXAMPLES = examples()


def test_the_docs_have_examples() -> None:
    files = {example.file.name for example in EXAMPLES}
    assert "README.md" in files and "cli.md" in files
    assert len(EXAMPLES) > 20


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.file.name}:{e.line}")
def test_every_example_names_real_commands_and_options(example: Example) -> None:
    args = tokens(example)
    if example.synopsis:
        check_synopsis(example, args)
    else:
        check_full(example, args)


def test_help_of_every_documented_command_runs() -> None:
    runner = CliRunner()
    paths = set()
    for example in EXAMPLES:
        path, _, pending = resolve(example, tokens(example))
        if not pending:
            paths.add(path)
    for example in EXAMPLES:
        args = tokens(example)
        if "--help" in args or "-h" in args:
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, f"{example.where}\n{result.output}"
    for path in sorted(paths):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, f"s3rs {' '.join(path)} --help\n{result.output}"
        assert "Usage: " in result.output


def test_an_unknown_option_or_command_in_the_docs_fails_with_file_and_line(
    tmp_path: Path,
) -> None:
    for text, message in [
        ("s3rs sync -p us_dw --no-such-option", "No such option"),
        ("s3rs watermark frobnicate -t x", "unknown command 'watermark frobnicate'"),
        ("s3rs s3clean list -t x [--bogus]", "--bogus is not an option"),
    ]:
        example = Example(REPO / "docs" / "x.md", 7, text)
        with pytest.raises(pytest.fail.Exception) as caught:
            args = tokens(example)
            (check_synopsis if example.synopsis else check_full)(example, args)
        assert "docs/x.md:7" in str(caught.value) and message in str(caught.value)
