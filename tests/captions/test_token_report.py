"""The token report in the session, and the error a bad token stops training with."""

from dreambooth_core.captions.captioning import caption_dataset
from dreambooth_core.captions.token_report import (
    bad_token_error,
    build_token_report,
    stored_token_report,
    write_token_report,
)
from dreambooth_core.config import CaptionSettings
from dreambooth_core.session.paths import TOKEN_REPORT_JSON, TOKEN_REPORT_MARKDOWN


def reported(prepared, tokenizer, files, **settings):
    session = prepared(files)
    caption_dataset(session, tokenizer, CaptionSettings(**settings))
    report = build_token_report(session, tokenizer)
    write_token_report(session, report)
    return report, session


def test_report_has_a_section_per_subject_with_its_captions(prepared, small_tokenizer):
    report, session = reported(prepared, small_tokenizer, {"shrk (1).jpg": None, "budidoremi/a.jpg": None},
                              class_word="man")
    data = session.read_json(TOKEN_REPORT_JSON)
    subjects = {s["token"]: s for s in data["subjects"]}
    assert subjects["shrk"]["analysis"]["verdict"] == "good" and subjects["shrk"]["suggestions"] == []
    assert subjects["budidoremi"]["analysis"]["common_words"] == ["do", "mi"]
    assert len(subjects["budidoremi"]["suggestions"]) == 5
    assert subjects["shrk"]["captions"] == {"photos/shrk (1).jpg": "photo of shrk man"}
    markdown = session.read_bytes(TOKEN_REPORT_MARKDOWN).decode()
    assert "## shrk" in markdown and "## budidoremi" in markdown
    assert "| photos/budidoremi/a.jpg | photo of budidoremi man |" in markdown
    assert "- class prompt: `photo of man`" in markdown


def test_bad_tokens_stop_with_their_files_and_suggestions(prepared, small_tokenizer):
    report, _ = reported(prepared, small_tokenizer, {"sks (1).jpg": None, "sks (2).jpg": None,
                                                    "shrk (1).jpg": None})
    message = str(bad_token_error(report))
    sks = next(s for s in report.subjects if s.token == "sks")
    assert "sks (1).jpg, sks (2).jpg: the token 'sks' is bad: SKS is a rifle brand" in message
    assert ", ".join(sks.suggestions) in message
    assert "--bad-token warn" in message and "shrk" not in message


def test_good_and_risky_tokens_do_not_stop(prepared, small_tokenizer):
    report, _ = reported(prepared, small_tokenizer, {"shrk (1).jpg": None, "r2d2 (1).jpg": None})
    assert {s.token: s.analysis.verdict for s in report.subjects} == {"shrk": "good", "r2d2": "risky"}
    assert bad_token_error(report) is None


def test_a_rerun_reuses_the_report_only_for_the_same_model_and_captions(prepared, small_tokenizer):
    session = prepared({"shrk (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())
    write_token_report(session, build_token_report(session, small_tokenizer, "model-a"))
    assert stored_token_report(session, "model-a").subjects[0].token == "shrk"
    assert stored_token_report(session, "model-b") is None  # another tokenizer may judge otherwise
    caption_dataset(session, small_tokenizer, CaptionSettings(class_word="man"))  # the captions change
    assert stored_token_report(session, "model-a") is None


def test_sdxl_judges_with_both_tokenizers_and_the_worse_verdict_decides(prepared, small_tokenizer, clip_tokenizer):
    """Two tokenizers that judge 'kax' differently (good / bad) stand in for SDXL's pair."""
    session = prepared({"kax (1).jpg": None, "shrk (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())
    report = build_token_report(session, small_tokenizer, tokenizer_2=clip_tokenizer)
    kax = next(s for s in report.subjects if s.token == "kax")
    assert {k: a.verdict for k, a in kax.per_tokenizer.items()} == {"tokenizer": "good", "tokenizer_2": "bad"}
    assert kax.analysis.verdict == "bad" and "kax (1).jpg: the token 'kax' is bad" in str(bad_token_error(report))
    write_token_report(session, report)
    markdown = session.read_bytes(TOKEN_REPORT_MARKDOWN).decode()
    assert "- tokenizer/ (first text encoder):\n  - verdict: **good**" in markdown
    assert "- tokenizer_2/ (second text encoder):\n  - verdict: **bad**" in markdown
    assert "tokenizer_2" not in str(build_token_report(session, small_tokenizer).model_dump())  # one tokenizer
