"""Subject masks from a text prompt: CLIPSeg (transformers' CLIPSegForImageSegmentation), for --masked-loss.

CLIPSeg segments whatever a short prompt names ('man', 'dog') in one forward pass of a CLIP ViT-B/16
with a small decoder: 150 M parameters, well under a second per photo on a CPU, and no per-class
training (a detector such as Mask R-CNN knows only its 80 COCO classes, and a person's class word may
be 'style' or 'toy'). Fetched from the hub and cached like the base model; `tiny` builds a small random
one offline, for the demo and tests (its masks mean nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreambooth_core.model.cache import build_once
from dreambooth_core.model.hub import download_hub_snapshot
from dreambooth_core.model.tiny import tiny_clip_configs, write_tiny_tokenizer

CLIPSEG_REPO = "CIDAS/clipseg-rd64-refined"
FILES = ["*.json", "*.txt", "*.safetensors"]
TINY_IMAGE_SIZE, _TINY_WIDTH, _SEED = 32, 32, 0


def segmenter_for(base_model: str) -> str:
    """The segmenter a base model trains with: tiny for the built-in tiny models (offline), else the hub's
    (the rule of EvaluationSettings.judges_for's auto)."""
    return "tiny" if base_model.startswith("tiny") else "hub"


def segmenter_name(spec: str) -> str:
    """What masks record they were made by."""
    return "tiny-clipseg" if spec == "tiny" else CLIPSEG_REPO


def fetch_segmenter(spec: str, cache_dir: Path, token: str | None = None,
                    log: logging.Logger = logging.getLogger("dreambooth")) -> Path:
    if spec == "tiny":
        return build_once(Path(cache_dir) / "tiny-clipseg", build_tiny_segmenter)[0]
    return download_hub_snapshot(CLIPSEG_REPO, Path(cache_dir) / "hub", FILES, ["*/*"], token=token,
                                 log=log)


class Segmenter:
    """CLIPSeg loaded from a folder: `probabilities` of the prompted subject at every pixel of an image."""

    def __init__(self, folder: Path | str):
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        self.model = CLIPSegForImageSegmentation.from_pretrained(str(folder)).eval()
        self.processor = CLIPSegProcessor.from_pretrained(str(folder))

    @torch.no_grad()
    def probabilities(self, image: Image.Image, prompt: str) -> np.ndarray:
        """[height, width] in [0, 1], at the image's own size."""
        inputs = self.processor(text=[prompt], images=[image.convert("RGB")], padding=True,
                                return_tensors="pt")
        logits = self.model(**inputs).logits  # [h, w] for one image (the batch dimension squeezed)
        return _resized(torch.sigmoid(logits.reshape(1, 1, *logits.shape[-2:])), image.size)


def _resized(probabilities: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    out = torch.nn.functional.interpolate(probabilities.float(), size=(height, width),
                                          mode="bilinear",
                                          align_corners=False)
    return out[0, 0].clamp(0, 1).numpy()


def build_tiny_segmenter(folder: Path) -> None:
    """A small random CLIPSeg with its processor, in hub layout."""
    from transformers import (
        CLIPImageProcessor,
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
    )

    write_tiny_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = CLIPSegForImageSegmentation(CLIPSegConfig(
            **tiny_clip_configs(tokenizer, _TINY_WIDTH, TINY_IMAGE_SIZE),
            projection_dim=_TINY_WIDTH, reduce_dim=16, extract_layers=[0, 1],
            decoder_num_attention_heads=2,
            decoder_intermediate_size=32))
    model.save_pretrained(folder, safe_serialization=True)
    size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    processor = CLIPSegProcessor(image_processor=CLIPImageProcessor(size=size, do_center_crop=False),
                                 tokenizer=tokenizer)
    processor.save_pretrained(folder)
