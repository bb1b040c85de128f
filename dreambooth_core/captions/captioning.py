"""Each prepared photo's subject token and caption, and each subject's prompts, in the
dataset manifest. Every problem in the photos is collected and reported at once.

A photo's caption, first found first: a hand-written `.txt` beside the photo; under
`--captions auto` the editable `.txt` beside its prepared image (written on the first run,
kept by every rerun, edits included), else the captioner's description with the token and
class word put in (captions/subject_words.py), written there; else the instance prompt.
What a captioner says of a prepared image is cached in the session (below)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict

from dreambooth_core.captions.subject_words import fit_caption, subject_caption
from dreambooth_core.captions.tokenizer import TextTokenizer
from dreambooth_core.captions.tokens import (
    caption,
    caption_from_text,
    class_prompt,
    class_word_for,
    parse_class_words,
    token_of_photo,
)
from dreambooth_core.config import CaptionSettings
from dreambooth_core.errors import DatasetError
from dreambooth_core.hashing import digest
from dreambooth_core.reports.terminal import progress_bar
from dreambooth_core.session.dataset_manifest import (
    DatasetItem,
    DatasetManifest,
    SubjectRecord,
    require_dataset_manifest,
    save_dataset_manifest,
)
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CAPTION_CACHE, PHOTOS


class Captions(BaseModel):
    model_config = ConfigDict(frozen=True)
    tokens: list[str]
    digest: str


def caption_file_of(source: str) -> str:
    return str(PurePosixPath(source).with_suffix(".txt"))


def caption_mode(setting: str, family_default: str, manifest: DatasetManifest | None,
                 training_started: bool) -> str:
    """'token' or 'auto'. `default` is the family's choice, except for a session that started
    training before captions were described: it goes on with the captions it trained on."""
    if setting != "default":
        return setting
    if training_started and manifest and not any(i.caption_origin == "captioner" for i in manifest.items):
        return "token"
    return family_default


def caption_dataset(session: Session, tokenizer: TextTokenizer, settings: CaptionSettings,
                    log: logging.Logger | None = None, mode: str = "token",
                    captioner: AutoCaptioner | None = None) -> Captions:
    """`mode`: 'token' or 'auto' (caption_mode); `captioner` describes the photos under 'auto'."""
    log = log or logging.getLogger("dreambooth")
    manifest = require_dataset_manifest(session)
    problems: list[str] = []
    tokens, origins = assign_tokens(manifest.items, settings.token, problems)
    classes = assign_classes(origins, settings.class_word, problems)
    described: dict[str, str] = {}
    if mode == "auto" and not problems:
        assert captioner is not None, "--captions auto needs a captioner"
        described = describe_photos(session,
                                    [i for i in manifest.items if not _has_caption_file(session, i)],
                                    captioner, log)
    items = [write_caption(session, item, tokens[item.source], classes[tokens[item.source]],
                           settings.instance_prompt, tokenizer, problems, mode,
                           described.get(item.file))
             if item.source in tokens else item for item in manifest.items]
    if problems:
        raise DatasetError("some photos cannot be used:\n  " + "\n  ".join(problems))
    manifest = manifest.model_copy(update={"items": items,
                                           "subjects": subject_records(items, origins, classes, settings)})
    save_dataset_manifest(session, manifest)
    log.info("Subjects: %s; e.g. caption %r", ", ".join(manifest.subjects), items[0].caption)
    return Captions(tokens=sorted(manifest.subjects), digest=captions_digest(manifest))


def captions_digest(manifest: DatasetManifest) -> str:
    """What training sees of the captions. Which photo belongs to which subject matters only
    with several subjects (balanced sampling); leaving it out for one keeps the digest that
    sessions captioned before subjects existed recorded, so they still resume."""
    inputs = [manifest.digest, [(item.source, item.caption) for item in manifest.items]]
    if len(manifest.subjects) > 1:
        inputs.append([(item.source, item.token) for item in manifest.items])
    return digest(inputs)


def assign_tokens(items: list[DatasetItem], override: str | None,
                  problems: list[str]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """({photo: its subject's token}, {token: the file and folder names it came from})."""
    tokens: dict[str, str] = {}
    origins: dict[str, set[str]] = defaultdict(set)
    unnamed: set[str] = set()  # names without a letter or digit ('🐶 (1).jpg'): fine with --token
    for item in items:
        try:
            token, where = token_of_photo(item.source)
        except DatasetError as exc:
            if not override:
                problems.append(str(exc))
                continue
            tokens[item.source] = override
            unnamed.add(item.source.split("/", 1)[1])
            continue
        tokens[item.source] = override or token
        origins[token].add(where)
    if override and len(origins) > 1:
        problems.append(f"--token {override!r} names one subject, but the photos hold {len(origins)} "
                        f"({', '.join(sorted(origins))}). Drop --token to train each under its own.")
    if override:
        return tokens, {override: unnamed.union(*origins.values())}
    problems.extend(same_token_problems(origins))
    return tokens, dict(origins)


def same_token_problems(origins: dict[str, set[str]]) -> list[str]:
    """The text encoder lowercases: 'Shrk' and 'shrk' would be one token for two subjects."""
    spellings: dict[str, list[str]] = defaultdict(list)
    for token in origins:
        spellings[token.lower()].append(token)
    return [f"{' and '.join(sorted(w for t in same for w in origins[t]))}: two subjects with the "
            f"same token {same[0].lower()!r} (the tokenizer ignores case). Rename one of them, or "
            "put both in one folder if they are the same subject."
            for same in spellings.values() if len(same) > 1]


def assign_classes(origins: dict[str, set[str]], spec: str | None,
                   problems: list[str]) -> dict[str, str | None]:
    words = parse_class_words(spec)
    unknown = sorted(set(words) - {None} - {t.lower() for t in origins})
    if unknown:
        problems.append(f"--class-word names {', '.join(unknown)}, but the subjects are "
                        f"{', '.join(sorted(origins))}. Use the subjects' tokens.")
    classes = {token: class_word_for(token, words) for token in origins}
    for token, word in classes.items():
        if word and word.lower() == token.lower():
            problems.append(f"{', '.join(sorted(origins[token]))}: the token {token!r} equals its "
                            "class word. The token must be a new word; rename the photos or change "
                            "--class-word.")
    return classes


def _has_caption_file(session: Session, item: DatasetItem) -> bool:
    return session.exists(caption_file_of(item.source)) or session.exists(caption_file_of(item.file))


def write_caption(session: Session, item: DatasetItem, token: str, class_word: str | None,
                  template: str, tokenizer: TextTokenizer, problems: list[str], mode: str = "token",
                  described: str | None = None) -> DatasetItem:
    """The item with its token and caption (see the module's docstring for which)."""
    hand_written, beside = caption_file_of(item.source), caption_file_of(item.file)
    if session.exists(hand_written) or (mode == "auto" and session.exists(beside)):
        text_file = hand_written if session.exists(hand_written) else beside
        text = session.read_bytes(text_file).decode("utf-8", errors="replace")
        origin = "hand-written" if text_file == hand_written else "captioner"
        item = item.model_copy(update={"token": token, "caption_file": text_file,
                                       "caption_origin": origin,
                                       "caption": caption_from_text(text, token, class_word, template)})
    elif mode == "auto" and described is not None:
        text = fit_caption(subject_caption(described, token, class_word, template),
                           caption("{token} {class}", token, class_word),
                           lambda t: tokenizer.length(t) <= tokenizer.context_length)
        session.write_bytes(beside, (text + "\n").encode())
        item = item.model_copy(update={"token": token, "caption_file": beside, "caption": text,
                                       "caption_origin": "captioner"})
    else:
        item = item.model_copy(update={"token": token, "caption_file": None,
                                       "caption_origin": "rule",
                                       "caption": caption(template, token, class_word)})
    length = tokenizer.length(item.caption)
    if length > tokenizer.context_length:
        path = PurePosixPath(item.caption_file or item.source)
        where = path.relative_to(PHOTOS) if path.is_relative_to(PHOTOS) else f"{session.url}/{path}"
        problems.append(f"{where}: the caption takes {length} tokens, more than the text encoder's "
                        f"{tokenizer.context_length}; the rest would be cut off. Shorten it.")
    return item


def subject_records(items: list[DatasetItem], origins: dict[str, set[str]],
                    classes: dict[str, str | None],
                    settings: CaptionSettings) -> dict[str, SubjectRecord]:
    return {token: SubjectRecord(class_word=classes[token],
                                 instance_prompt=caption(settings.instance_prompt, token,
                                                         classes[token]),
                                 class_prompt=class_prompt(classes[token], settings.class_prompt),
                                 photos=sum(item.token == token for item in items),
                                 sources=sorted(origins[token]))
            for token in sorted(origins)}


# What a captioner says of each prepared photo, cached in the session per image content and
# captioner: a rerun, or a session whose captions were edited or removed, asks the model nothing
# for an image it has described.

Describe = Callable[[list[bytes]], list[str]]
BATCH = 8


@dataclass(frozen=True)
class AutoCaptioner:
    name: str  # what its descriptions are cached under (a repo id, or the tiny one's version)
    load: Callable[[], Describe]  # called only when an image has no cached description


def cache_file(item: DatasetItem, captioner: str) -> str:
    return f"{CAPTION_CACHE}/{digest([item.sha256 or item.file, captioner])[:24]}.txt"


def describe_photos(session: Session, items: list[DatasetItem], captioner: AutoCaptioner,
                    log: logging.Logger | None = None) -> dict[str, str]:
    """{prepared file: its description} for `items`; the model is loaded only for the uncached."""
    log = log or logging.getLogger("dreambooth")
    found = {item.file: session.read_bytes(cache_file(item, captioner.name)).decode("utf-8", errors="replace")
             for item in items if session.exists(cache_file(item, captioner.name))}
    todo = [item for item in items if item.file not in found]
    if todo:
        log.info("Describing %d photos with %s (%d cached)", len(todo), captioner.name, len(found))
        describe, bar = captioner.load(), progress_bar(len(todo), "describe photos", unit="photo")
        for start in range(0, len(todo), BATCH):  # each batch is kept as soon as it is described
            batch = todo[start:start + BATCH]
            for item, text in zip(batch,
                                  describe([session.read_bytes(item.file) for item in batch])):
                session.write_bytes(cache_file(item, captioner.name), text.encode())
                found[item.file] = text
            bar.update(len(batch))
        bar.close()
    return found
