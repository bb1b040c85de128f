"""Square, resized training images made from the session's photos.

Preparation is cached per photo: a prepared image is named after the key of what
made it (source sha256, resolution, PREPARE_VERSION, face detector), so a rerun,
or a photo set that gained one photo, prepares only the photos whose key has no
image yet. Photos are prepared in a process pool (one worker per core).

Prepared images are derived files: every run checks each against the sha256 the manifest
records, and one that is missing or changed (deleted or edited by hand) is made again from
its photo, at the recorded crop, with a warning naming it. A damaged manifest is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from pydantic import BaseModel, ConfigDict

from dreambooth_core.captions.captioning import caption_file_of
from dreambooth_core.errors import DatasetError, SessionError
from dreambooth_core.hashing import digest
from dreambooth_core.photos import faces
from dreambooth_core.photos.buckets import BUCKETS_VERSION, bucket_grid, bucket_lines
from dreambooth_core.photos.contact_sheet import contact_sheet
from dreambooth_core.photos.crop import PREPARE_VERSION, PreparedPhoto, prepare_or_error, prepare_photo
from dreambooth_core.photos.originals import PhotoSet
from dreambooth_core.reports.terminal import progress_bar
from dreambooth_core.session.dataset_manifest import (
    DatasetItem,
    DatasetManifest,
    load_dataset_manifest,
    save_dataset_manifest,
)
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CONTACT_SHEET, DATASET, DATASET_MANIFEST, PHOTOS
from dreambooth_core.session.processes import end_with_parent
from dreambooth_core.session.state import load_state

PARALLEL_BYTES = 4 << 20  # below this much photo data a process pool costs more than it saves


class PreparedDataset(BaseModel):
    """What the dataset step produced: small enough to pass between tasks."""

    model_config = ConfigDict(frozen=True)
    count: int
    resolution: int
    digest: str
    prepared: int = 0  # images made by this call (the others were reused)
    buckets: dict[str, int] = {}  # photos per aspect-ratio bucket ("832x1216"); empty: squares


def method(buckets: int = 0) -> str:
    """Everything besides the photo and the resolution that decides a prepared image; `buckets`: the
    step of the aspect-ratio buckets' sides (buckets.py), 0 for squares."""
    detector = faces.current_detector()
    made = (f"v{PREPARE_VERSION}/{getattr(detector, '__module__', '?')}."
            f"{getattr(detector, '__qualname__', '?')}")
    return made + (f"/buckets-v{BUCKETS_VERSION}:{buckets}" if buckets else "")


def prepared_file(source_sha256: str, resolution: int, buckets: int = 0) -> str:
    """Where the prepared image of a photo goes: named after everything that made it."""
    return f"{DATASET}/{digest([source_sha256, resolution, method(buckets)])[:20]}.png"


def prepare_many(photos: list[tuple[str, bytes]], resolution: int, workers: int | None = None,
                 buckets: int = 0) -> Iterator[PreparedPhoto | DatasetError]:
    """prepare_photo over (name, bytes) pairs, in order; an unreadable photo yields its error.

    workers=None: one process per core when there is enough data to be worth it. The
    output does not depend on the number of workers."""
    if workers is None:
        heavy = len(photos) > 1 and sum(len(data) for _, data in photos) >= PARALLEL_BYTES
        workers = min(os.cpu_count() or 1, len(photos)) if heavy else 1
    sizes = (resolution, bucket_grid(resolution, buckets)) if buckets else (resolution,)
    if workers <= 1 or sys.platform != "linux":  # macOS: fork is unsafe with system frameworks
        yield from (prepare_or_error(name, data, *sizes) for name, data in photos)
        return
    # fork: workers start at once with everything imported, a plugged-in face detector
    # included (forkserver and spawn would re-import the caller's __main__: the CLI,
    # prefect, ~2 s a worker). A worker runs only prepare_or_error: Pillow and OpenCV,
    # none of the locks the parent's threads hold. (Calling cv2.setNumThreads in a forked
    # worker hangs: leave OpenCV's pool alone.) Each worker ends with this process, however it
    # ends (a forked worker of a SIGKILLed run would wait for work forever, holding its pipes):
    # the pool forks them from this thread, which outlives them.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=end_with_parent,
                             initargs=(os.getpid(),)) as pool:
        pending: list[Future] = []
        for name, data in photos:  # a sliding window keeps only a few photos in memory
            pending.append(pool.submit(prepare_or_error, name, data, *sizes))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        yield from (future.result() for future in pending)


def prepare_dataset(session: Session, photos: dict[str, str], resolution: int,
                    log: logging.Logger | None = None, reuse: Iterable[DatasetItem] = (),
                    workers: int | None = None, buckets: int = 0) -> list[DatasetItem]:
    """Manifest items for the session photos `photos` ({name: sha256}), preparing only those
    `reuse` has no image for: only those are read.

    Every unreadable photo is collected and reported at once."""
    log = log or logging.getLogger("dreambooth")
    names = sorted(photos)
    wanted = {prepared_file(photos[name], resolution, buckets) for name in names}
    intact = [_intact(session, item, log) for item in reuse if item.file in wanted]
    known = {item.file: item for item in intact if item is not None}
    items: dict[str, DatasetItem] = {}
    for name in names:
        file = prepared_file(photos[name], resolution, buckets)
        if file in known:
            items[name] = DatasetItem(file=file, source=f"{PHOTOS}/{name}",
                                      source_sha256=photos[name],
                                      crop_box=known[file].crop_box, face_box=known[file].face_box,
                                      sha256=known[file].sha256, size=known[file].size)
    todo = [name for name in names if name not in items]
    problems = []
    results = prepare_many([(name, session.read_bytes(f"{PHOTOS}/{name}")) for name in todo],
                           resolution, workers,
                           buckets)
    bar = progress_bar(len(todo), "prepare photos", unit="photo")  # [ui] on a terminal
    for name, result in zip(todo, results):
        bar.update()
        if isinstance(result, DatasetError):
            problems.append(str(result))
            continue
        file = prepared_file(photos[name], resolution, buckets)
        session.write_bytes(file, result.png)
        items[name] = DatasetItem(file=file, source=f"{PHOTOS}/{name}", source_sha256=photos[name],
                                  crop_box=list(result.crop_box),
                                  face_box=list(result.face_box) if result.face_box else None,
                                  sha256=_sha256(result.png),
                                  size=list(result.size) if result.size else None)
    bar.close()
    if problems:
        raise DatasetError("some photos cannot be used:\n  " + "\n  ".join(problems))
    log.info("Prepared %d photos at %s (%d reused)", len(todo),
             f"the buckets of {resolution}x{resolution}'s area" if buckets else f"{resolution}x{resolution}",
             len(names) - len(todo))
    return [items[name] for name in names]


def build_dataset(session: Session, photos: PhotoSet, resolution: int,
                  log: logging.Logger | None = None,
                  workers: int | None = None, buckets: int = 0) -> PreparedDataset:
    """Prepare the imported photos, reusing every image already prepared for them.

    `buckets`: each photo in the aspect-ratio bucket nearest its own, of sides in steps of this many
    pixels (buckets.py); 0: squares.
    Writes dataset/manifest.json (source hash, crop box, face box per photo) and
    reports/contact_sheet.png."""
    log = log or logging.getLogger("dreambooth")
    state = load_state(session)
    old = _readable_manifest(session, log)
    # Once training has started the prepared images are part of its fingerprint: a new
    # PREPARE_VERSION or detector applies to new sessions only.
    if (old and old.photos_digest == photos.digest and old.resolution == resolution
            and (old.method == method(buckets) or (state and state.training_started))):
        manifest, remade = _heal(session, old, log)
        if remade or not session.exists(CONTACT_SHEET):
            images = [session.read_bytes(i.file) for i in manifest.items]
            session.write_bytes(CONTACT_SHEET, contact_sheet(images))
        log.info("Dataset already prepared (%d photos%s)", len(manifest.items),
                 f"; {remade} made again" if remade else "")
        return _summary(manifest, remade)
    images = {name: photos.files[name] for name in photos.photos}
    items = prepare_dataset(session, images, resolution, log, old.items if old else (), workers,
                            buckets)
    made = method(buckets)
    manifest = DatasetManifest(resolution=resolution, photos_digest=photos.digest, method=made,
                               items=items,
                               digest=DatasetManifest.prepared_digest(resolution, photos.digest, made, items))
    _report_buckets(manifest, log)
    session.write_bytes(CONTACT_SHEET, contact_sheet([session.read_bytes(i.file) for i in items]))
    save_dataset_manifest(session, manifest)
    _remove_unlisted(session, {i.file for i in items})
    before = {o.file for o in old.items} if old else set()
    return _summary(manifest, sum(1 for i in items if i.file not in before))


def _heal(session: Session, manifest: DatasetManifest,
          log: logging.Logger) -> tuple[DatasetManifest, int]:
    """The manifest with every prepared image intact: one missing or changed is made again from
    its photo at the recorded crop (the same image), with a warning; sha256s an older manifest
    lacks are recorded. Returns it and how many images were made again."""
    items, remade = [], 0
    for item in manifest.items:
        intact = _intact(session, item, log)
        if intact is None:
            intact, remade = _remake(session, item, manifest.resolution), remade + 1
        items.append(intact)
    if items != manifest.items:
        manifest = manifest.model_copy(update={"items": items})
        save_dataset_manifest(session, manifest)
    return manifest, remade


def _remake(session: Session, item: DatasetItem, resolution: int) -> DatasetItem:
    photo = session.read_bytes(item.source)
    if _sha256(photo) != item.source_sha256:
        raise DatasetError(
            f"{session.url}/{item.source} changed since {item.file} was prepared from it, so the "
            "image cannot be made again. Put the photo back (run with --photos and the folder the "
            "session was started with), or start a new --session.")
    png = prepare_photo(item.source, photo, resolution, tuple(item.crop_box),
                        size=tuple(item.size) if item.size else None).png
    session.write_bytes(item.file, png)
    return item.model_copy(update={"sha256": _sha256(png)})


def _intact(session: Session, item: DatasetItem, log: logging.Logger) -> DatasetItem | None:
    """`item` with its image's sha256 recorded, or None (with a warning) when the image is
    missing or differs from the sha256 recorded."""
    data = session.read_bytes(item.file) if session.exists(item.file) else None
    found = _sha256(data) if data is not None else None
    if found is not None and item.sha256 in (None, found):
        return item.model_copy(update={"sha256": found})
    why = "missing" if data is None else "not the image that was prepared (its sha256 differs)"
    log.warning("%s/%s (prepared from %s) is %s; preparing it again from the photo", session.url,
                item.file, item.source, why)
    return None


def _readable_manifest(session: Session, log: logging.Logger) -> DatasetManifest | None:
    """The dataset manifest, or None when there is none or it is damaged (it is rebuilt)."""
    try:
        return load_dataset_manifest(session)
    except SessionError:
        log.warning("%s/%s is damaged; preparing the photos again", session.url, DATASET_MANIFEST)
        return None


def _report_buckets(manifest: DatasetManifest, log: logging.Logger) -> None:
    """The photos per bucket, and a warning for each bucket that holds one photo."""
    sizes = [tuple(item.size) for item in manifest.items if item.size]
    if not sizes:
        return
    lines, lonely = bucket_lines(sizes)
    log.info("Aspect-ratio buckets: %s", "; ".join(lines))
    for warning in lonely:
        log.warning("%s", warning)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove_unlisted(session: Session, files: set[str]) -> None:
    """Prepared images no photo of the current manifest uses (a replaced photo, an old setting), and
    their captions; the captions of the images kept stay (they may be edited by hand)."""
    kept = files | {caption_file_of(file) for file in files}
    for name in session.list(DATASET):
        path = f"{DATASET}/{name}"
        if path != DATASET_MANIFEST and path not in kept:
            session.remove(path)


def _summary(manifest: DatasetManifest, prepared: int) -> PreparedDataset:
    sizes = Counter(f"{item.size[0]}x{item.size[1]}" for item in manifest.items if item.size)
    return PreparedDataset(count=len(manifest.items), resolution=manifest.resolution,
                           digest=manifest.digest, prepared=prepared,
                           buckets=dict(sorted(sizes.items())))
