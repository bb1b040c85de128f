"""The vision-language model that describes photos for `--captions auto`: Florence-2.

Why Florence-2 (base, 0.23 B parameters, about 0.5 GB in fp16): it captions as well as models
many times its size (the Florence-2 paper: COCO caption CIDEr 133 zero-shot for base, 136 for
large at 3x the size), so it is the best quality per GB of the candidates; it runs natively in
transformers 5 (Florence2ForConditionalGeneration, no remote code), greedy decoding makes its
captions reproducible, and ai-toolkit captions with it too. Qwen2.5-VL/Qwen3-VL write richer
captions at 3-8 B parameters (6-16 GB), more than a 16 GB card holds beside a training run;
SmolVLM-256M is as small but describes people less reliably; BLIP-2 needs 3.7 B parameters for
one short sentence. `--captioner florence-community/Florence-2-large` gives a little more at 3x.

Fetched from the hub and cached like the base model; `tiny` builds a small random Florence-2
offline (its captions are random words), for tests and the demo.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable

import torch

from dreambooth_core.errors import ModelError
from dreambooth_core.model.cache import build_once
from dreambooth_core.model.hub import download_hub_snapshot

CAPTION_TASK = "<DETAILED_CAPTION>"  # one to three sentences: what fits a CLIP prompt, cut to fit
CAPTIONER_FILES = ["*.json", "*.txt", "*.safetensors"]
MAX_NEW_TOKENS = 96
BATCH = 8
TINY_CAPTIONER = "tiny-captioner-v1"  # its cache folder and its name in cached captions
TINY_SIZE = 64  # pixels; the vision tower downsamples 32x: 4 image tokens and a pooled one
TINY_WORDS = ("a", "man", "woman", "young", "smiling", "wearing", "red", "jacket", "standing",
              "outdoors",
              "in", "with", "brown", "hair", "beard", "front", "of", "wall", "the", "sunlight")
_SEED = 0

Describe = Callable[[list[bytes]], list[str]]


def captioner_name(spec: str) -> str:
    """What captions made by `spec` are cached under: a new tiny captioner version makes new ones."""
    return TINY_CAPTIONER if spec == "tiny" else spec


def fetch_captioner(spec: str, cache_dir: Path, token: str | None = None,
                    log: logging.Logger = logging.getLogger("dreambooth")) -> Path:
    """The captioner's folder: a hub repo (fetched once), or `tiny`."""
    if spec == "tiny":
        return build_once(Path(cache_dir) / TINY_CAPTIONER, build_tiny_captioner)[0]
    try:
        return download_hub_snapshot(spec, Path(cache_dir) / "hub", CAPTIONER_FILES, token=token,
                                     log=log)
    except ModelError as exc:
        raise ModelError(f"the captioner of --captions auto: {exc} Or pass --captions token (the instance "
                         "prompt alone, no captioner).") from None


def load_captioner(folder: Path, device: str | None = None) -> Describe:
    """A function from encoded images to their descriptions, in order."""
    from PIL import Image
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model = Florence2ForConditionalGeneration.from_pretrained(str(folder), dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(str(folder))

    @torch.no_grad()
    def describe(images: list[bytes]) -> list[str]:
        texts = []
        for start in range(0, len(images), BATCH):
            batch = [Image.open(io.BytesIO(data)).convert("RGB") for data in images[start:start + BATCH]]
            inputs = processor(text=[CAPTION_TASK] * len(batch), images=batch, return_tensors="pt")
            inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                      for k, v in inputs.items()}
            out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 num_beams=1)
            texts += [" ".join(t.split()) for t in processor.batch_decode(out, skip_special_tokens=True)]
        return texts
    return describe


def build_tiny_captioner(folder: Path) -> None:
    """A small random Florence-2 whose vocabulary is a few caption words, in hub layout."""
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    # \u0120: BPE's word start
    vocab = specials + [f"\u0120{word}" for word in TINY_WORDS] + ["<image>"]
    tokenizer = BartTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[],
                              extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessor(size={"height": TINY_SIZE, "width": TINY_SIZE},
                                do_center_crop=False)
    images.image_seq_length = (TINY_SIZE // 32) ** 2 + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = Florence2ForConditionalGeneration(Florence2Config(
            vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[8, 8, 16, 16],
                               num_heads=[1, 1, 2, 2],
                               num_groups=[1, 1, 2, 2], window_size=2, projection_dim=16,
                               max_position_embeddings=8, drop_path_rate=0.0),
            text_config=dict(model_type="bart", vocab_size=len(tokenizer), d_model=16,
                             encoder_layers=1,
                             decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                             encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, forced_bos_token_id=None,
                             decoder_start_token_id=tokenizer.eos_token_id,
                             forced_eos_token_id=None),
            image_token_id=tokenizer.image_token_id))
    # Random weights would end at once, or repeat one word: say a few different words.
    model.generation_config.min_new_tokens, model.generation_config.no_repeat_ngram_size = 8, 1
    model.save_pretrained(folder)
    Florence2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
