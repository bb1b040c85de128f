"""The documentation site (mkdocs.yml, docs/) builds with warnings as errors, and its reference pages,
written from the code at build time (docs/tools/reference.py), hold every command and setting."""

import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from dreambooth_core.config import SECTIONS
from flows.cli import build_parser
from flows.cli_flags import flag_name

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("material", reason="mkdocs-material is a test extra: run ./setup.sh")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(REPO / "mkdocs.yml"), "--site-dir", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def page_text(site: Path, page: str) -> str:
    """The page as a reader sees it: its text without tags, whitespace collapsed."""
    html = (site / page / "index.html").read_text()
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_every_command_is_in_the_reference(site):
    text = page_text(site, "reference/commands")
    commands = build_parser()._subparsers._group_actions[0].choices
    assert commands and all(f"dreambooth {name}" in text for name in commands)
    assert "dreambooth automations apply" in text  # a command's own commands too
    assert "--steps-per-second" in text and "--max-attempts" in text


def test_every_setting_is_in_the_reference_with_its_flag_and_description(site):
    text = page_text(site, "reference/settings")
    for kind in SECTIONS.values():
        for name, field in kind.model_fields.items():
            assert f"{name} {flag_name(name)}" in text, name
            assert " ".join(field.description.split()) in text, name


def test_the_benchmarks_and_contributing_pages_are_the_repository_files(site):
    assert "Benchmarks" in page_text(site, "benchmarks")
    assert "How a change is checked" in page_text(site, "contributing")
