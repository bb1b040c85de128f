"""The models that judge generated images: DINO ViT-S/16 (subject fidelity) and CLIP
ViT-L/14 (subject and prompt fidelity), as the DreamBooth paper measures.

Fetched from the hub and cached like the base model (`tiny` builds small random ones
offline, for the demo and tests). Only .safetensors weights are taken when the repo has
them; a repo with none is fetched again for its PyTorch weights, which transformers
reads with torch's weights-only loader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from dreambooth_core.evaluation.face_identity import FaceEmbedder
from dreambooth_core.model.cache import build_once
from dreambooth_core.model.hub import download_hub_snapshot
from dreambooth_core.model.tiny import tiny_clip_configs, write_tiny_tokenizer

DINO_REPO, CLIP_REPO = "facebook/dino-vits16", "openai/clip-vit-large-patch14"
JUDGE_FILES = ["*.json", "*.txt", "*.safetensors"]
TORCH_WEIGHTS = ["*.json", "*.txt", "pytorch_model.bin"]
SUBFOLDERS = ["*/*"]  # the models sit at the top of their repos
TINY_IMAGE_SIZE, _TINY_WIDTH, _SEED = 32, 32, 0


@dataclass
class Judges:
    dino: torch.nn.Module  # transformers ViTModel
    dino_processor: object
    clip: torch.nn.Module  # transformers CLIPModel
    clip_processor: object  # CLIPProcessor: image processor and tokenizer
    faces: FaceEmbedder | None = None  # face identity, for people (face_identity.py)

    @torch.no_grad()
    def dino_images(self, images: list) -> torch.Tensor:
        """(n, width) DINO embeddings (the class token) of PIL images."""
        pixels = self.dino_processor(images=images, return_tensors="pt")["pixel_values"]
        return self.dino(pixel_values=pixels).last_hidden_state[:, 0].float()

    @torch.no_grad()
    def clip_images(self, images: list) -> torch.Tensor:
        pixels = self.clip_processor(images=images, return_tensors="pt")["pixel_values"]
        return _features(self.clip.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def clip_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.clip_processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        return _features(self.clip.get_text_features(input_ids=tokens["input_ids"],
                                                     attention_mask=tokens["attention_mask"]))


def _features(output) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x may wrap them in an output object."""
    return (output if isinstance(output, torch.Tensor) else output.pooler_output).float()


def fetch_judges(spec: str, cache_dir: Path, token: str | None = None,
                 log: logging.Logger = logging.getLogger("dreambooth")) -> tuple[Path, Path]:
    """(DINO folder, CLIP folder): `hub` for the paper's models, `tiny` for small random ones."""
    if spec == "tiny":
        folder, _ = build_once(Path(cache_dir) / "tiny-judges", build_tiny_judges)
        return folder / "dino", folder / "clip"
    return tuple(_hub_judge(repo, Path(cache_dir) / "hub", token, log) for repo in (DINO_REPO, CLIP_REPO))


def _hub_judge(repo: str, hub_cache: Path, token: str | None, log: logging.Logger) -> Path:
    folder = download_hub_snapshot(repo, hub_cache, JUDGE_FILES, SUBFOLDERS, token=token, log=log)
    if not any(folder.glob("*.safetensors")):
        folder = download_hub_snapshot(repo, hub_cache, TORCH_WEIGHTS, SUBFOLDERS, token=token, log=log)
    return folder


def load_judges(dino_folder: Path, clip_folder: Path, face_model: Path | None = None) -> Judges:
    """`face_model`: ArcFace's .onnx file (face_identity.fetch_face_model), when a subject is a person."""
    from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor, ViTModel

    dino = ViTModel.from_pretrained(str(dino_folder), add_pooling_layer=False).eval()
    clip = CLIPModel.from_pretrained(str(clip_folder)).eval()
    return Judges(dino=dino, dino_processor=AutoImageProcessor.from_pretrained(str(dino_folder)),
                  clip=clip, clip_processor=CLIPProcessor.from_pretrained(str(clip_folder)),
                  faces=FaceEmbedder(face_model) if face_model else None)


def build_tiny_judges(folder: Path) -> None:
    """A small random DINO-shaped ViT and CLIP model with their processors, in hub layout."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        dino = ViTModel(ViTConfig(image_size=TINY_IMAGE_SIZE, patch_size=8, hidden_size=_TINY_WIDTH,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
                        add_pooling_layer=False)
        write_tiny_tokenizer(folder / "clip")
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "clip"))
        clip = CLIPModel(CLIPConfig(
            **tiny_clip_configs(tokenizer, _TINY_WIDTH, TINY_IMAGE_SIZE),
            projection_dim=_TINY_WIDTH))
    dino.save_pretrained(folder / "dino", safe_serialization=True)
    ViTImageProcessor(size=size).save_pretrained(folder / "dino")
    clip.save_pretrained(folder / "clip", safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE_SIZE},
                                         crop_size=size)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder / "clip")
