"""Estimated peak training memory of the full-size SD 1.5 / 2.1 architectures, on a CPU, without weights.

    python benchmarks/memory_estimate.py                      # every model x plan, bf16, 512/768 px
    python benchmarks/memory_estimate.py --models sd15 --precision fp16

Each row runs real training steps of our Trainer on fake tensors
(dreambooth_core/training/memory_estimate.py) and prints the peak of live tensor
bytes and what stays between steps, in GiB, as a markdown table. The models are
built from their published configurations (nothing is downloaded); the token ids
come from the tiny tokenizer, which changes no size. Needs torch, diffusers,
transformers and peft (no prefect).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_speed import SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE  # noqa: E402

from dreambooth_core.config import RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.model.tiny import write_tiny_tokenizer  # noqa: E402
from dreambooth_core.training.memory_estimate import estimate_training_memory  # noqa: E402
from dreambooth_core.training.model_parts import ModelParts  # noqa: E402

# Published SD 2.1 component configurations (stabilityai/stable-diffusion-2-1-base and -2-1).
SD21_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SD21_TEXT = dict(SD15_TEXT, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                 num_hidden_layers=23, hidden_act="gelu", projection_dim=512)
MODELS = {  # name: (unet, text encoder, scheduler, resolution)
    "sd15": (SD15_UNET, SD15_TEXT, SD15_SCHEDULER, 512),
    "sd21-512": (SD21_UNET, SD21_TEXT, SD15_SCHEDULER, 512),
    "sd21-768-v": (dict(SD21_UNET, sample_size=96, upcast_attention=True), SD21_TEXT,
                   dict(SD15_SCHEDULER, prediction_type="v_prediction"), 768),
}
PLANS = {  # name: (training options, runtime options, class images)
    "dreambooth, text encoder phase, prior": ({"method": "dreambooth", "text_encoder_steps": 1}, {}, True),
    "dreambooth, UNet only, prior": ({"method": "dreambooth", "text_encoder_steps": 0}, {}, True),
    "dreambooth, UNet only, prior, checkpointing": ({"method": "dreambooth", "text_encoder_steps": 0},
                                                    {"gradient_checkpointing": True}, True),
    "dreambooth, UNet only, prior, EMA": ({"method": "dreambooth", "text_encoder_steps": 0, "ema_decay": 0.999},
                                          {}, True),
    "lora rank 4, prior": ({"method": "lora"}, {}, True),
    "lora rank 4, text encoder too, prior, checkpointing": ({"method": "lora", "lora_text_encoder": True},
                                                            {"gradient_checkpointing": True}, True),
    "textual inversion": ({"method": "textual-inversion"}, {}, False),
}


def parts_builder(unet: dict, text: dict, scheduler: dict, tokenizer_folder: Path):
    def build() -> ModelParts:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        return ModelParts(
            unet=UNet2DConditionModel(**unet), vae=AutoencoderKL(**SD15_VAE).requires_grad_(False).eval(),
            text_encoder=CLIPTextModel(CLIPTextConfig(**text)).requires_grad_(False).eval(),
            tokenizer=CLIPTokenizer.from_pretrained(tokenizer_folder), noise_scheduler=DDPMScheduler(**scheduler))
    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--precision", choices=["no", "fp16", "bf16"], default="bf16")
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS), metavar="PLAN")
    args = parser.parse_args()
    print(f"| model | plan ({args.precision}, batch 1) | peak GiB | between steps GiB | seconds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(Path(tmp))
        for name in args.models:
            unet, text, scheduler, resolution = MODELS[name]
            build = parts_builder(unet, text, scheduler, Path(tmp))
            for plan in args.plans:
                training, runtime, prior = PLANS[plan]
                settings = TrainingSettings(steps=10, mixed_precision=args.precision, **training)
                estimate = estimate_training_memory(build, settings, resolution, RuntimeSettings(**runtime), prior)
                print(f"| {name} ({resolution} px) | {plan} | {estimate.peak_gib:.2f} | "
                      f"{estimate.between_steps / 2**30:.2f} | {estimate.seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
