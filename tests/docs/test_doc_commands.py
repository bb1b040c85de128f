"""Every `dreambooth ...` (or `python -m flows.cli ...`) command in README.md, CONTRIBUTING.md and
docs/ names a real command and only flags that command has: checked against the CLI's own parser."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from flows.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
# A command's start, where a shell runs one: at the start of the code, after a prompt (`$ `) or a
# separator, behind variable assignments (`HF_TOKEN=... dreambooth publish`), with or without a path.
COMMAND = re.compile(r"(?:^|[;&|]|\$ )\s*(?:[A-Za-z_]\w*=\S*\s+)*"
                     r"(?:\S*/)?(?:dreambooth|python -m flows\.cli)(?=[ \t])")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
SHELL_ENDS = {"|", "||", "&&", ";", "&", ">", "2>&1", "#"}


def documents() -> list[Path]:
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]


def code_lines(text: str):
    """(line number, code) of each line of a fenced block (continuations joined) and each inline span."""
    fenced, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
        else:
            for span in CODE_SPAN.findall(line):
                yield number, span.replace("\\|", " ")


def commands_in(code: str) -> list[list[str]]:
    """The words of each dreambooth command in a line of code, up to where the shell ends it."""
    found = []
    for match in COMMAND.finditer(code):
        rest = code[match.end():].split("  #")[0]
        try:
            words = shlex.split(rest, comments=True)
        except ValueError:  # an unclosed quote: a prose fragment such as `dreambooth generate "A`
            words = rest.split()
        cut = next((i for i, word in enumerate(words) if word in SHELL_ENDS), len(words))
        found.append(words[:cut])
    return found


def problems(words: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What the parser does not know in these words: the subcommand, then each flag."""
    wrong, command = [], parser
    while subparsers := next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)),
                             None):
        name = next((w.strip("`,.;:") for w in words if not w.startswith("-")), None)
        if name is None:
            return wrong  # `dreambooth --help` or a bare mention
        if name not in subparsers.choices:
            return [f"unknown command {name!r}"]
        command, words = subparsers.choices[name], words[[w.strip("`,.;:") for w in words].index(name) + 1:]
    for word in words:
        flag = word.strip("[]()").split("=")[0]
        if flag.startswith("--") and flag not in command._option_string_actions:
            wrong.append(f"unknown flag {flag} of {command.prog}")
    return wrong


def test_documented_commands_exist_with_their_flags():
    parser = build_parser()
    checked, wrong = 0, []
    for path in documents():
        for number, code in code_lines(path.read_text()):
            for words in commands_in(code):
                checked += 1
                wrong += [f"{path.relative_to(REPO)}:{number}: {problem}"
                          for problem in problems(words, parser)]
    assert not wrong, "\n".join(wrong)
    assert checked > 50  # the guide's commands were found


@pytest.mark.parametrize("code, expected", [
    ("dreambooth train --session s --no-such-flag 1", ["unknown flag --no-such-flag of dreambooth train"]),
    ("dreambooth trian --session s", ["unknown command 'trian'"]),
    (".venv/bin/python -m flows.cli status --json", []),
    ("dreambooth automations apply --max-attempts 3 [--heartbeat-timeout S]", []),
    ("dreambooth automations apply --max-attempt 3",
     ["unknown flag --max-attempt of dreambooth automations apply"]),
    ("dreambooth status --json | grep --count demo", []),  # flags after the pipe are grep's
    ("dreambooth-generate/generate-local and dreambooth_core", []),  # names, not commands
    ("kubectl apply -n dreambooth -f service.yaml", []),  # a namespace, not the command
    ("HF_TOKEN=hf_x .venv/bin/dreambooth publish --repo a/b --privat",
     ["unknown flag --privat of dreambooth publish"]),
    ("$ dreambooth status --jsn", ["unknown flag --jsn of dreambooth status"]),
])
def test_the_check_finds_what_is_wrong(code, expected):
    assert [p for words in commands_in(code) for p in problems(words, build_parser())] == expected
