"""The token report in the session, and the error a bad token stops training with."""

from dreambooth_core.captions.analysis import analyse_token
from dreambooth_core.captions.captioning import caption_dataset
from dreambooth_core.captions.token_report import (
    bad_token_error,
    build_token_report,
    judged_inputs,
    per_tokenizer_summary,
    report_markdown,
    stored_token_report,
    write_token_report,
)
from dreambooth_core.config import CaptionSettings
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
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


def test_a_family_names_its_tokenizers_and_the_worst_verdict_decides(prepared, small_tokenizer,
                                                                     clip_tokenizer, unigram_tokenizer):
    """FLUX.1's pair: CLIP's BPE and T5's SentencePiece, each reported under the name the caller gives."""
    session = prepared({"kax (1).jpg": None, "shrk (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())
    judges = {"CLIP": clip_tokenizer, "T5": unigram_tokenizer}
    report = build_token_report(session, judges)
    kax = next(s for s in report.subjects if s.token == "kax")
    assert {name: a.verdict for name, a in kax.per_tokenizer.items()} == {"CLIP": "bad", "T5": "good"}
    assert kax.per_tokenizer["T5"].pieces == ["▁ka", "x"] and kax.analysis.verdict == "bad"
    assert kax.suggestions and all(analyse_token(word, judge).verdict == "good"
                                   for word in kax.suggestions for judge in judges.values())
    write_token_report(session, report)
    markdown = session.read_bytes(TOKEN_REPORT_MARKDOWN).decode()
    assert "- CLIP:\n  - verdict: **bad**" in markdown
    assert "- T5:\n  - verdict: **good**: 2 tokens, none of them a word the model knows.\n" \
           "  - splits into 2 token(s): `▁ka` `x`" in markdown
    assert per_tokenizer_summary(kax) == "CLIP: bad, 2 token(s); T5: good, 2 token(s)"


def test_a_family_with_one_tokenizer_reports_it_alone(prepared, small_tokenizer, byte_level_tokenizer):
    """FLUX.2 [klein]: Qwen's byte-level BPE only."""
    session = prepared({"budidoremi (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())
    subject = build_token_report(session, {"Qwen": byte_level_tokenizer}).subjects[0]
    assert subject.per_tokenizer == {} and subject.analysis.common_words == ["do", "re", "mi"]
    assert subject.analysis.pieces == ["▁", "b", "u", "d", "i", "do", "re", "mi"]
    assert all(analyse_token(word, byte_level_tokenizer).verdict == "good" for word in subject.suggestions)


def test_a_report_without_suggestions_says_so(prepared, small_tokenizer):
    session = prepared({"sks (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())
    report = build_token_report(session, small_tokenizer)
    bare = report.model_copy(update={"subjects": [report.subjects[0].model_copy(update={"suggestions": []})]})
    message = str(bad_token_error(bare))
    assert "No rarer identifier among the words this tool tries suits every tokenizer" in message
    assert "Rarer identifiers: ." not in message and "(e.g." not in message


def old_sdxl_report(session: str, judged: str) -> dict:
    """reports/tokens.json as this tool wrote it before families named their tokenizers."""
    def analysis(verdict: str, pieces: list[str], reason: str) -> dict:
        return {"word": "kax", "pieces": pieces, "token_count": len(pieces), "common_words": [],
                "has_digits": False, "verdict": verdict, "reason": reason}
    good = analysis("good", ["ka", "x</w>"], "2 tokens, none of them a word the model knows.")
    bad = analysis("bad", ["kax</w>"],
                   "the model already knows 'kax': it would mix that meaning into the subject.")
    return {"session": session, "judged": judged, "subjects": [{
        "token": "kax", "class_word": None, "instance_prompt": "photo of kax", "class_prompt": None,
        "sources": ["kax (1).jpg"], "analysis": bad, "suggestions": ["zork"],
        "captions": {"photos/kax (1).jpg": "photo of kax"},
        "per_tokenizer": {"tokenizer": good, "tokenizer_2": bad}}]}


def test_a_report_written_before_families_still_loads_and_reads_the_same(prepared, small_tokenizer):
    session = prepared({"kax (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())
    judged = judged_inputs(require_dataset_manifest(session), "model-a")
    session.write_json(TOKEN_REPORT_JSON, old_sdxl_report(session.name, judged))
    report = stored_token_report(session, "model-a")
    assert report is not None and set(report.subjects[0].per_tokenizer) == {"tokenizer", "tokenizer_2"}
    markdown = report_markdown(report)
    assert "- tokenizer/ (first text encoder):\n  - verdict: **good**" in markdown
    assert "- tokenizer_2/ (second text encoder):\n  - verdict: **bad**" in markdown
    assert per_tokenizer_summary(report.subjects[0]) == (
        "tokenizer: good, 2 token(s); tokenizer_2: bad, 1 token(s)")
    single = old_sdxl_report(session.name, judged)
    del single["subjects"][0]["per_tokenizer"]  # one tokenizer: older reports had no such key
    session.write_json(TOKEN_REPORT_JSON, single)
    assert stored_token_report(session, "model-a").subjects[0].per_tokenizer == {}
