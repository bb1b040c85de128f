"""Subject masks for --masked-loss: a user's mask file is read, a photo without a subject is warned."""

import io
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sessions import opened_session, prepare_folder

from dreambooth_core.model.segmentation import Segmenter, build_tiny_segmenter
from dreambooth_core.photos.masks import mask_values
from dreambooth_core.photos.validate import ValidationSettings, validate_folder
from dreambooth_core.session.dataset_manifest import load_dataset_manifest
from dreambooth_core.training.data.examples import load_examples
from dreambooth_core.training.data.masks import build_masks


@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clipseg")
    build_tiny_segmenter(folder)
    return folder


def test_a_mask_file_beside_a_photo_is_cropped_as_the_photo_was(tmp_path, photos, tiny_segmenter, caplog):
    # shrk (2).jpg is 256x213: its square crop is 213x213 (around the face); white left of x = 100
    mask = np.zeros((213, 256), dtype=np.uint8)
    mask[:, :100] = 255
    Image.fromarray(mask, "L").save(photos / "shrk (2).mask.png")
    report = validate_folder(photos, ValidationSettings(resolution=64, subject_type="other"))
    assert len(report.photos) == 4 and not report.ignored  # the photo check reads it as no photo
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    items = load_dataset_manifest(session).items
    assert len(items) == 4 and session.exists("photos/shrk (2).mask.png")  # imported beside its photo
    loads = []

    def segmenter():
        loads.append(1)
        return Segmenter(tiny_segmenter)

    manifest = build_masks(session, "tiny-clipseg", segmenter)
    item = next(i for i in items if i.source == "photos/shrk (2).jpg")
    left, top, right, bottom = item.crop_box
    assert (right - left, bottom - top) == (213, 213) and left > 0
    own = manifest.masks[item.file]
    assert own.source == "photos/shrk (2).mask.png"
    values = mask_values(session.read_bytes(own.file))
    edge = (100 - left) * 64 / 213  # the white part's edge in the 64 px image
    assert values[:, :int(edge) - 1].min() > 0.99 and values[:, int(edge) + 2:].max() < 0.01
    assert own.subject_share == pytest.approx(round(edge) / 64, abs=1.5 / 64)
    others = [m for f, m in manifest.masks.items() if f != item.file]
    assert all(m.source.startswith("segmenter") and m.source.endswith(": person") for m in others)
    assert loads == [1]
    # what training reads: the mask beside its image
    examples = load_examples(session, masks=True)
    index = [i.file for i in items].index(item.file)
    assert examples[index].mask.shape == (1, 1, 64, 64)
    assert torch.equal(examples[index].mask[0, 0], torch.from_numpy(values))
    # a rerun makes no mask again and loads no segmenter
    assert build_masks(session, "tiny-clipseg", segmenter) == manifest and loads == [1]


def test_a_photo_with_no_detectable_subject_is_warned(tmp_path, photos, tiny_segmenter, caplog):
    """A stand-in segmenter that finds nothing anywhere (its decoder's last bias far below 0)."""
    blind = tmp_path / "blind"
    shutil.copytree(tiny_segmenter, blind)
    model = Segmenter(blind).model
    with torch.no_grad():
        model.decoder.transposed_convolution.bias.fill_(-30.0)
    model.save_pretrained(blind, safe_serialization=True)
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    with caplog.at_level(logging.WARNING):
        manifest = build_masks(session, "blind", lambda: Segmenter(blind))
    assert len(manifest.without_subject) == 4
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "no subject found" in r.getMessage()]
    assert len(warned) == 4 and any(m.startswith("photos/shrk (1).jpg: no subject found") for m in warned)
    assert "shrk (1).mask.png" in warned[0]
    sheet = Image.open(io.BytesIO(session.read_bytes("reports/contact_sheet.png")))
    assert sheet.size[0] > 64
