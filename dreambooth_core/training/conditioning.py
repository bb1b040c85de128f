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

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Condition:
    hidden: torch.Tensor  # [batch, 77, width]
    pooled: torch.Tensor | None = None  # SDXL: [batch, projection width]

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        pooled = [c.pooled for c in conditions]
        return Condition(torch.cat([c.hidden for c in conditions]),
                         None if pooled[0] is None else torch.cat(pooled))


def token_ids(tokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def encode_captions(captions: list[str], tokenizer, encoder: torch.nn.Module, device: torch.device,
                    tokenizer_2=None, encoder_2: torch.nn.Module | None = None) -> Condition:
    """SD 1.x / 2.x with one encoder; SDXL when the second is given."""
    if encoder_2 is None:
        return Condition(encoder(token_ids(tokenizer, captions, device))[0])
    first = encoder(token_ids(tokenizer, captions, device), output_hidden_states=True)
    second = encoder_2(token_ids(tokenizer_2, captions, device), output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return Condition(hidden, second.text_embeds)


def sdxl_time_ids(original_hw: tuple[int, int], crop_box: tuple[int, int, int, int], target: int,
                  flip: bool = False) -> tuple[float, ...]:
    """(original h, w, crop top, crop left, target h, w) for a square crop `crop_box` (left, top,
    right, bottom, in the original's pixels) resized to `target`: the crop's corner is given in
    the photo resized so that the crop is `target` wide, as SDXL was trained. A mirrored image
    has its crop mirrored too."""
    height, width = original_hw
    left, top, right, _ = crop_box
    scale = target / (right - left)
    if flip:
        left = width - right
    return (float(height), float(width), round(top * scale), round(left * scale), float(target), float(target))
