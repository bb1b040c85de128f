"""What the UNet is conditioned on besides the noisy latents: the caption's text embeddings, and
for SDXL its pooled embedding and the micro-conditioning time ids.

- SD 1.x / 2.x: the text encoder's last hidden state (an SD 2 folder already holds the encoder
  without its final layer, so that is OpenCLIP's penultimate one).
- SDXL: both encoders' penultimate hidden states (hidden_states[-2]), side by side in the
  feature dimension (768 + 1280 = 2048 channels in SDXL base); the second encoder's pooled,
  projected embedding (`text_embeds`); and six time ids per image: the original photo's size,
  the crop's top-left corner in the resized photo, and the target size, each as (height, width).
"""

from __future__ import annotations

import torch

from dreambooth_core.families.family import Condition, ImageGeometry, token_ids


def encode_captions(captions: list[str], tokenizers: list, encoders: list[torch.nn.Module],
                    device: torch.device) -> Condition:
    """SD 1.x / 2.x with one encoder; SDXL with two."""
    if len(encoders) == 1:
        return Condition(encoders[0](token_ids(tokenizers[0], captions, device))[0])
    first, second = (encoder(token_ids(tokenizer, captions, device), output_hidden_states=True)
                     for tokenizer, encoder in zip(tokenizers, encoders))
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return Condition(hidden, second.text_embeds)


def time_ids(images: list[ImageGeometry], device: torch.device) -> torch.Tensor:
    """SDXL: each image's micro-conditioning, as the photo was cropped (and mirrored)."""
    rows = [sdxl_time_ids(image.original_size or (image.height, image.width),
                          image.crop_box or (0, 0, image.width, image.height), (image.height, image.width),
                          image.flip)
            for image in images]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def sdxl_time_ids(original_hw: tuple[int, int], crop_box: tuple[int, int, int, int],
                  target: int | tuple[int, int], flip: bool = False) -> tuple[float, ...]:
    """(original h, w, crop top, crop left, target h, w) for a crop `crop_box` (left, top, right,
    bottom, in the original's pixels) resized to `target` (a square's side, or an aspect-ratio
    bucket's (height, width)): the crop's corner is given in the photo resized so that the crop
    is the target's width, as SDXL was trained. A mirrored image has its crop mirrored too."""
    height, width = original_hw
    target_height, target_width = (target, target) if isinstance(target, int) else target
    left, top, right, _ = crop_box
    scale = target_width / (right - left)
    if flip:
        left = width - right
    return (float(height), float(width), round(top * scale), round(left * scale), float(target_height),
            float(target_width))
