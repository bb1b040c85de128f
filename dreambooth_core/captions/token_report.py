"""The token report: each subject's token analysis, prompts and captions, as
reports/tokens.json and reports/tokens.md in the session.

A model with several tokenizers (SDXL: CLIP's BPE twice, the second padding with "!";
FLUX.1: CLIP's BPE and T5's SentencePiece) has the token judged with each, reported per
tokenizer under the name its caller gives it, and the worst verdict decides."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from dreambooth_core.captions.analysis import TokenAnalysis, analyse_token, suggest_tokens, worst
from dreambooth_core.captions.tokenizer import TextTokenizer
from dreambooth_core.errors import DatasetError
from dreambooth_core.hashing import digest
from dreambooth_core.session.dataset_manifest import DatasetManifest, require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import TOKEN_REPORT_JSON, TOKEN_REPORT_MARKDOWN

SHOWN_SOURCES = 3
# The names reports gave SDXL's two tokenizers (their folders) before callers named them; a report
# shows them as "tokenizer/ (first text encoder)".
TOKENIZER_ROLES = {"tokenizer": "first text encoder", "tokenizer_2": "second text encoder"}


class SubjectToken(BaseModel):
    model_config = ConfigDict(frozen=True)
    token: str
    class_word: str | None
    instance_prompt: str
    class_prompt: str | None
    sources: list[str]  # the file or folder names the token came from
    analysis: TokenAnalysis  # what decides: with several tokenizers, the worst of their analyses
    suggestions: list[str]
    captions: dict[str, str]  # session photo -> caption
    # With several tokenizers: each one's name ("CLIP", "T5"; SDXL's "tokenizer", "tokenizer_2") ->
    # its analysis; empty with one.
    per_tokenizer: dict[str, TokenAnalysis] = {}


class TokenReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    session: str
    subjects: list[SubjectToken]
    judged: str | None = None  # digest of what the report was made from: the model and the captions


def judged_inputs(manifest: DatasetManifest, model_digest: str) -> str:
    return digest([model_digest, manifest.model_dump(mode="json")])


def stored_token_report(session: Session, model_digest: str) -> TokenReport | None:
    """The session's report when it was made from this model and these captions. Judging
    again needs the tokenizer, whose import costs a rerun a second or more."""
    manifest = require_dataset_manifest(session)
    if not session.exists(TOKEN_REPORT_JSON):
        return None
    try:
        report = TokenReport.model_validate(session.read_json(TOKEN_REPORT_JSON))
    except ValueError:  # damaged, or written by an older version: judge again
        return None
    return report if report.judged == judged_inputs(manifest, model_digest) else None


def build_token_report(session: Session, tokenizers: TextTokenizer | Mapping[str, TextTokenizer],
                       model_digest: str | None = None,
                       tokenizer_2: TextTokenizer | None = None) -> TokenReport:
    """`tokenizers`: the model's tokenizer, or each of its tokenizers under the name the report
    gives it ({"CLIP": ..., "T5": ...}). `tokenizer_2`: SDXL's second tokenizer beside the first,
    reported as "tokenizer" and "tokenizer_2"."""
    judges = _named(tokenizers, tokenizer_2)
    manifest = require_dataset_manifest(session)
    tokens = set(manifest.subjects)
    subjects = []
    for token, record in sorted(manifest.subjects.items()):
        per_tokenizer = {name: analyse_token(token, judge) for name, judge in judges.items()}
        analysis = worst(list(per_tokenizer.values()))
        suggestions = ([] if analysis.verdict == "good"
                       else suggest_tokens(list(judges.values()), 5, token, tokens))
        subjects.append(SubjectToken(
            token=token, class_word=record.class_word, instance_prompt=record.instance_prompt,
            class_prompt=record.class_prompt, sources=record.sources, analysis=analysis,
            suggestions=suggestions, captions={i.source: i.caption for i in manifest.items
                                               if i.token == token},
            per_tokenizer=per_tokenizer if len(judges) > 1 else {}))
    judged = judged_inputs(manifest, model_digest) if model_digest else None
    return TokenReport(session=session.name, subjects=subjects, judged=judged)


def _named(tokenizers: TextTokenizer | Mapping[str, TextTokenizer],
           tokenizer_2: TextTokenizer | None) -> dict[str, TextTokenizer]:
    if isinstance(tokenizers, Mapping):
        assert tokenizer_2 is None and tokenizers, "name every tokenizer in the mapping"
        return dict(tokenizers)
    return {"tokenizer": tokenizers} | ({"tokenizer_2": tokenizer_2} if tokenizer_2 is not None else {})


def tokenizer_title(name: str, role_after: str = " (") -> str:
    """How a report names a tokenizer: as its caller did, a model's tokenizer folders with their role."""
    if name not in TOKENIZER_ROLES:
        return name
    return f"{name}/{role_after}{TOKENIZER_ROLES[name]}" + (")" if role_after.endswith("(") else "")


def write_token_report(session: Session, report: TokenReport) -> None:
    session.write_json(TOKEN_REPORT_JSON, report.model_dump())
    session.write_bytes(TOKEN_REPORT_MARKDOWN, report_markdown(report).encode())


def analysis_lines(analysis: TokenAnalysis, markdown: bool = True) -> list[str]:
    code, bold = ("`", "**") if markdown else ("", "")
    pieces = " ".join(f"{code}{p}{code}" for p in analysis.pieces)
    common = ", ".join(f"'{w}'" for w in analysis.common_words) or "none"
    return [f"- verdict: {bold}{analysis.verdict}{bold}: {analysis.reason}",
            f"- splits into {analysis.token_count} token(s): {pieces}",
            f"- common words among the pieces: {common}",
            f"- digits: {'yes' if analysis.has_digits else 'no'}"]


def report_markdown(report: TokenReport) -> str:
    lines = [f"# Tokens of session {report.session}", "",
             "| token | class | tokens | common words | digits | verdict |",
             "|---|---|---|---|---|---|"]
    for s in report.subjects:
        a = s.analysis
        common, digits = ", ".join(a.common_words) or "-", "yes" if a.has_digits else "no"
        lines.append(f"| {s.token} | {s.class_word or '-'} | {a.token_count} | {common} | {digits} "
                     f"| {a.verdict} |")
    for s in report.subjects:
        lines += ["", f"## {s.token}", "", *_subject_analysis_lines(s),
                  f"- instance prompt: `{s.instance_prompt}`",
                  f"- class prompt: `{s.class_prompt}`" if s.class_prompt
                  else "- class prompt: none (no class word)"]
        if s.suggestions:
            lines.append(f"- rarer identifiers to consider: {', '.join(s.suggestions)}")
        lines += ["", "| photo | caption |", "|---|---|"]
        lines += [f"| {photo} | {caption} |" for photo, caption in s.captions.items()]
    return "\n".join(lines) + "\n"


def _subject_analysis_lines(subject: SubjectToken) -> list[str]:
    if not subject.per_tokenizer:
        return analysis_lines(subject.analysis)
    lines = []
    for name, analysis in subject.per_tokenizer.items():
        lines += [f"- {tokenizer_title(name)}:",
                  *(f"  {line}" for line in analysis_lines(analysis))]
    return lines


def per_tokenizer_summary(subject: SubjectToken) -> str:
    """One line: each tokenizer's verdict and token count, or the one analysis's reason."""
    if not subject.per_tokenizer:
        return subject.analysis.reason
    return "; ".join(f"{name}: {a.verdict}, {a.token_count} token(s)"
                     for name, a in subject.per_tokenizer.items())


def bad_token_error(report: TokenReport) -> DatasetError | None:
    """One error for every subject whose token is bad, or None."""
    bad = [s for s in report.subjects if s.analysis.verdict == "bad"]
    if not bad:
        return None
    lines = [f"{_sources(s)}: the token {s.token!r} is bad: {s.analysis.reason} "
             f"{suggested(s.suggestions)}"
             for s in bad]
    example = f" (e.g. '{bad[0].suggestions[0]} (1).jpg')" if bad[0].suggestions else ""
    return DatasetError(
        "\n  ".join(["bad subject tokens (see reports/tokens.md in the session):", *lines]) +
        f"\nRename the photos or folders{example} and start a new --session, pass --token for a "
        "single subject, or pass --bad-token warn to train anyway.")


def suggested(suggestions: list[str]) -> str:
    if not suggestions:
        return "No rarer identifier among the words this tool tries suits every tokenizer: choose one."
    return f"Rarer identifiers: {', '.join(suggestions)}."


def _sources(subject: SubjectToken) -> str:
    shown = ", ".join(subject.sources[:SHOWN_SOURCES])
    more = len(subject.sources) - SHOWN_SOURCES
    return shown + (f" and {more} more" if more > 0 else "")
