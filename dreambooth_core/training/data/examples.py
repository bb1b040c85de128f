"""The examples training reads: the session's prepared photos and the class images."""

from __future__ import annotations

import io

import torch

from dreambooth_core.photos.crop import upright_size
from dreambooth_core.session.class_images import ClassImages, read_class_images
from dreambooth_core.session.dataset_manifest import DatasetItem, require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.training.data.masks import load_mask_manifest, mask_tensor
from dreambooth_core.training.trainer import Example


def pixels_from_png(data: bytes) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1]."""
    import numpy as np
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def load_examples(session: Session, crops: bool = False, masks: bool = False) -> list[Example]:
    """`crops`: with each photo's upright size and crop box (SDXL's micro-conditioning; the
    originals are read for their size). `masks`: with each photo's subject mask (--masked-loss)."""
    items = require_dataset_manifest(session).items
    found = load_mask_manifest(session) if masks else None
    return [Example(pixels=pixels_from_png(session.read_bytes(i.file)), caption=i.caption,
                    subject=i.token or "",
                    mask=mask_tensor(session, found, i.file) if found else None,
                    **(_crop_of(session, i) if crops else {})) for i in items]


def _crop_of(session: Session, item: DatasetItem) -> dict:
    width, height = upright_size(item.source, session.read_bytes(item.source))
    return {"original_size": (height, width), "crop_box": tuple(item.crop_box)}


def load_class_examples(manifest: ClassImages | None, session: Session) -> list[Example]:
    if manifest is None:
        return []
    return [Example(pixels_from_png(data), image_set.prompt, image_set.subject)
            for image_set, data in read_class_images(manifest, session)]
