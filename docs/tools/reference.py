"""mkdocs hook: the reference pages, written at build time from the code so they cannot drift.

reference/commands.md walks the `dreambooth` argparse parser (flows/cli.py); reference/settings.md
lists every setting of DreamBoothConfig (dreambooth_core/config.py) with its flag, default and
field description. Both are generated files of the build; nothing is written into docs/.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
# Pages of the repository outside docs/ that the site shows as they are: {page: file}.
INCLUDED = {"benchmarks.md": "BENCHMARKS.md", "contributing.md": "CONTRIBUTING.md"}


def on_files(files: Files, config) -> Files:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    files.append(File.generated(config, "reference/commands.md", content=commands_page()))
    files.append(File.generated(config, "reference/settings.md", content=settings_page()))
    for page, source in INCLUDED.items():
        files.append(File.generated(config, page, abs_src_path=str(REPO / source)))
    return files


def commands_page() -> str:
    from flows.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal: the same page anywhere
    parser = build_parser()
    lines = ["# Commands", "",
             "Generated from the `dreambooth` command's own parser (`flows/cli.py`) when the site is "
             "built: what `dreambooth COMMAND --help` prints. Every setting of a session is also a flag "
             "of `train`, `plan` and `upload`: see [Settings](settings.md).", ""]
    for path, command, summary in subcommands(parser, ["dreambooth"], None):
        lines += command_section(path, command, summary)
    return "\n".join(lines) + "\n"


def subcommands(parser: argparse.ArgumentParser, path: list[str], summary: str | None):
    """(words, parser, one-line help) of every command that does something, depth first, in the
    parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield from subcommands(child, path + [name], helps.get(name))
            return
    yield path, parser, summary


def command_section(path: list[str], command: argparse.ArgumentParser, summary: str | None) -> list[str]:
    from dreambooth_core.config import SECTION_OF

    lines = [f"## {' '.join(path)}", ""]
    if command.description or summary:
        lines += [escape(command.description or summary), ""]
    actions = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
    setting_flags = {a for a in actions if a.dest in SECTION_OF or a.dest == "session"}
    if {a.dest for a in setting_flags} != {*SECTION_OF, "session"}:  # some (validate): explained here
        setting_flags = set()
    own = [a for a in actions if a not in setting_flags]
    settings = [a for a in actions if a in setting_flags]
    if settings:  # the settings' flags would fill the usage: name them once, below
        usage = f"{' '.join(path)} --session SESSION [--SETTING VALUE ...]"
        usage += "".join(f" [{a.option_strings[0]}{'' if a.nargs == 0 else ' ' + a.dest.upper()}]"
                         for a in own)
    else:
        usage = command.format_usage().removeprefix("usage: ").strip()
    lines += ["```", usage, "```", ""]
    if own:
        lines += ["| argument | meaning |", "|---|---|"]
        lines += [f"| {argument_name(a)} | {escape(a.help % vars_of(a) if a.help else '')} |" for a in own]
        lines.append("")
    if settings:
        lines += [f"Settings as flags ({len(settings)}; each explained in [Settings](settings.md)): "
                  + ", ".join(f"`{a.option_strings[0]}`" for a in settings) + ".", ""]
    return lines


def argument_name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("+", "*") else "")
    value = "" if action.nargs == 0 else " " + (action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()))
    required = " (required)" if action.required else ""
    return " / ".join(f"`{flag}{value}`" for flag in action.option_strings) + required


def vars_of(action: argparse.Action) -> dict:
    """What argparse fills into a help text's %(default)s and the like."""
    return {**vars(action), "prog": "dreambooth"}


def settings_page() -> str:
    from dreambooth_core.config import SECTIONS, DreamBoothConfig
    from flows.cli_flags import flag_name

    lines = ["# Settings", "",
             "Generated from the configuration's field descriptions (`dreambooth_core/config.py`) when the "
             "site is built. Each setting is a flag of `dreambooth train`, `plan` and `upload` (the flag "
             "column); in Python and in `prefect.yaml` the settings nest in their sections "
             "(`training: {learning_rate: 1e-6}`), and flat settings are accepted as well.", "",
             f"**`session`** (`--session`, required): "
             + escape(DreamBoothConfig.model_fields["session"].description),
             ""]
    fingerprint = getattr(DreamBoothConfig, "TRAINING_SECTIONS", ())
    for section, kind in SECTIONS.items():
        about = escape(DreamBoothConfig.model_fields[section].description or "")
        if section in fingerprint:
            about += " Part of the training fingerprint ([Sessions](../design/sessions.md))."
        lines += [f"## {section}", "", about, "",
                  "| setting | flag | default | meaning |", "|---|---|---|---|"]
        for name, field in kind.model_fields.items():
            default = "required" if field.is_required() else "none" if field.default is None \
                else f"`{field.default}`"
            meaning = escape(field.description or "")
            lines.append(f"| `{name}` | `{flag_name(name)}` | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def escape(text: str) -> str:
    """Text of a table cell or paragraph: its pipes and angle brackets shown, not read as markup."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")
