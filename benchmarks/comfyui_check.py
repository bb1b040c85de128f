"""Our SDXL and FLUX.1 exports through ComfyUI's own loading code: a check by hand, since CI
cannot fetch ComfyUI.

    git clone https://github.com/Comfy-Org/ComfyUI /somewhere/ComfyUI
    .venv/bin/python -m pip install --no-deps --target /tmp/comfy-deps \
        einops torchsde trampoline sentencepiece
    PYTHONPATH=/tmp/comfy-deps .venv/bin/python benchmarks/comfyui_check.py --comfyui /somewhere/ComfyUI

(--no-deps: torchsde's dependencies would put a second, CUDA torch of several GB first on the path.)

ComfyUI tells models apart by their keys' names and shapes, so a narrow test model is not
taken for SDXL or FLUX.1: this builds the full-size architectures from their published configs
on the meta device (shapes without weights; SDXL's small VAE with real ones), writes each export
from them as training does, and hands them to ComfyUI:

1. single file: detected as SDXL; every UNet, VAE and text-encoder key loads into ComfyUI's
   models (none missing that ComfyUI needs, none unexpected);
2. LoRA (kohya form): every key maps onto a weight of ComfyUI's SDXL UNet or text encoders
   (no "lora key not loaded"), each adapter's shape matching its weight;
3. textual inversion: the clip_l / clip_g vectors reach each encoder's prompt embeddings;
4. FLUX.1 single file (the transformer in BFL's layout, what `models/diffusion_models` holds),
   [dev] and [schnell]: detected as Flux / FluxSchnell at width 3072 with 19 + 38 blocks, every
   key loads into ComfyUI's Flux model through the path of its diffusion-model loader;
5. FLUX.1 LoRA (the single file, transformer and CLIP adapters): every key maps onto a weight of
   ComfyUI's Flux model or its CLIP-L (no "lora key not loaded"), one patch per adapted module,
   each carrying its alpha, each adapter's shape matching its weight or its rows of a fused one.

Prints a line per check and exits 1 if any fails. About a minute and 2 GB on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dreambooth_core.families import load_model_parts, write_config_folder  # noqa: E402
from dreambooth_core.families.flux_configs import write_flux_config_folder  # noqa: E402
from dreambooth_core.families.flux_layout import to_bfl_state  # noqa: E402
from dreambooth_core.families.flux_lora import (  # noqa: E402
    FLUX_TEXT_LORA_TARGETS, FLUX_TRANSFORMER_LORA_TARGETS, flux_lora_state)
from dreambooth_core.families.sd_embedding import export_sdxl_embedding  # noqa: E402
from dreambooth_core.families.sd_lora import kohya_lora_state  # noqa: E402
from dreambooth_core.families.sd_single_file import to_sdxl_single_file_state  # noqa: E402
from dreambooth_core.families.stable_diffusion import STABLE_DIFFUSION  # noqa: E402

META, CPU = torch.device("meta"), torch.device("cpu")
# ComfyUI leaves these out of the SDXL CLIP on purpose (it warns about no other missing key).
COMFY_IGNORES = (".logit_scale", ".transformer.text_projection.weight")


def import_comfy(checkout: Path):
    """ComfyUI's modules, for the CPU. torchvision serves only models other than SDXL; where it
    does not import beside this torch, an empty module stands in."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (our libraries first: they
    from peft import LoraConfig  # noqa: F401                          look for torchvision as they load)
    from transformers import CLIPTextModel  # noqa: F401

    sys.path.insert(0, str(checkout))
    sys.argv = [sys.argv[0], "--cpu"]
    try:
        import torchvision  # noqa: F401
    except Exception:
        stand_in = types.ModuleType("torchvision")
        stand_in.transforms = types.ModuleType("torchvision.transforms")
        sys.modules |= {"torchvision": stand_in, "torchvision.transforms": stand_in.transforms}
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.lora
    import comfy.lora_convert
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.sd
    import comfy.sdxl_clip
    import comfy.utils
    return comfy


class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        logging.getLogger().addHandler(self)
        logging.getLogger().setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def sdxl_parts(work: Path, real_vae: bool = False):
    folder = write_config_folder("sdxl", Path(tempfile.mkdtemp(dir=work)))
    with META:
        parts = load_model_parts(folder, META, weights=False)
    if real_vae:
        from diffusers import AutoencoderKL

        parts.vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
    return parts


def comfy_sdxl(comfy, state: dict):
    """ComfyUI's model config, UNet model and CLIP for a single file's state, built on meta."""
    prefix = comfy.model_detection.unet_prefix_from_state_dict(state)
    config = comfy.model_detection.model_config_from_unet(state, prefix)
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model(state, prefix, device=META)
    clip = comfy.sd.CLIP(config.clip_target(state_dict=state), tokenizer_data={}, parameters=0,
                         model_options={"initial_device": META, "load_device": CPU, "offload_device": CPU,
                                        "dtype": torch.float16})
    return prefix, config, model, clip


def check_single_file(comfy, work: Path) -> list[str]:
    parts = sdxl_parts(work, real_vae=True)
    state = to_sdxl_single_file_state(parts.denoiser, parts.vae, parts.text_encoder, parts.text_encoder_2)
    prefix, config, model, clip = comfy_sdxl(comfy, dict(state))
    problems = [] if type(config).__name__ == "SDXL" else [f"detected as {type(config).__name__}, not SDXL"]
    problems += [] if len(vae_keys := [k for k in state if k.startswith("first_stage_model.")]) else ["no VAE keys"]
    unet = config.process_unet_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    missing, unexpected = model.diffusion_model.load_state_dict(unet, strict=False)
    problems += [f"UNet key missing: {k}" for k in missing] + [f"UNet key unused: {k}" for k in unexpected]
    vae_state = config.process_vae_state_dict(comfy.utils.state_dict_prefix_replace(  # it takes the keys out
        dict(state), {p: "" for p in config.vae_key_prefix}, filter_keys=True))
    missing, unexpected = comfy.sd.VAE(sd=vae_state).first_stage_model.load_state_dict(vae_state, strict=False)
    problems += [f"VAE key missing: {k}" for k in missing] + [f"VAE key unused: {k}" for k in unexpected]
    text = config.process_clip_state_dict({k: v for k, v in state.items() if k.startswith("conditioner.")})
    missing, unexpected = clip.load_sd(text, full_model=True)
    problems += [f"text key missing: {k}" for k in missing if not k.endswith(COMFY_IGNORES)]
    problems += [f"text key unused: {k}" for k in unexpected]
    return problems or [f"PASS: detected as SDXL; {len(state)} keys ({len(vae_keys)} of the VAE), all loaded"]


def check_lora(comfy, work: Path) -> list[str]:
    from peft import LoraConfig, inject_adapter_in_model

    trained = sdxl_parts(work)
    with META:
        trained.denoiser.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=list(STABLE_DIFFUSION.lora_targets)))
        for encoder in (trained.text_encoder, trained.text_encoder_2):
            inject_adapter_in_model(LoraConfig(r=2, lora_alpha=3, target_modules=list(STABLE_DIFFUSION.text_lora_targets)), encoder)
    lora = kohya_lora_state(trained.denoiser, trained.text_encoder, text_encoder_2=trained.text_encoder_2)
    base = sdxl_parts(work)
    _, _, model, clip = comfy_sdxl(comfy, to_sdxl_single_file_state(base.denoiser, base.vae, base.text_encoder,
                                                                     base.text_encoder_2))
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, comfy.lora.model_lora_keys_unet(model, {}))
    messages = Messages()
    patches = comfy.lora.load_lora(lora, key_map)
    problems = [line for line in messages.lines if "lora key not loaded" in line]
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)
    applied = set(patcher.add_patches(patches, 1.0)) | set(clip.add_patches(patches, 1.0))
    problems += [f"patch not applied: {k}" for k in patches if k not in applied]
    weights = {**model.state_dict(), **clip.cond_stage_model.state_dict()}
    for key, adapter in patches.items():
        up, down, target = adapter.weights[0], adapter.weights[1], weights[key if isinstance(key, str) else key[0]]
        if (up.shape[0], down.shape[1]) != tuple(target.shape):
            problems.append(f"{key}: adapter {tuple(up.shape)} x {tuple(down.shape)} for a {tuple(target.shape)} weight")
    layers = {k.split(".")[0] for k in lora}
    return problems or [f"PASS: {len(lora)} keys of {len(layers)} layers all mapped and applied"]


def check_embedding(comfy, work: Path) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    vectors = {"l": torch.randn(2, 768, generator=generator), "g": torch.randn(2, 1280, generator=generator)}
    export_sdxl_embedding("zorx", vectors["l"], vectors["g"], work)
    tokens = comfy.sdxl_clip.SDXLTokenizer(embedding_directory=str(work)).tokenize_with_weights(
        "a photo of embedding:zorx dog")
    model = comfy.sdxl_clip.SDXLClipModel(device=META, dtype=torch.float32)
    problems = []
    for encoder in ("l", "g"):
        clip = getattr(model, f"clip_{encoder}")
        table = clip.transformer.get_input_embeddings()
        table.to_empty(device=CPU)
        torch.nn.init.zeros_(table.weight)
        embeds, _, _, info = clip.process_tokens([[t for t, _ in batch] for batch in tokens[encoder]], CPU)
        rows = embeds[0, info[0]["index"]:info[0]["index"] + 2] if info else None
        if rows is None or not torch.equal(rows, vectors[encoder]):
            problems.append(f"clip_{encoder}: the prompt's embedding rows are not the file's vectors")
    return problems or ["PASS: clip_l (768) and clip_g (1280) vectors reach both encoders' prompt embeddings"]


def flux_parts(work: Path, variant: str = "dev"):
    """The full-size FLUX.1 transformer and CLIP-L text encoder, built on meta from the published configs."""
    from diffusers import FluxTransformer2DModel
    from transformers import AutoConfig, CLIPTextModel

    folder = write_flux_config_folder(variant, Path(tempfile.mkdtemp(dir=work)))
    with META:
        transformer = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(folder, subfolder="transformer"))
        text_encoder = CLIPTextModel(AutoConfig.from_pretrained(folder, subfolder="text_encoder"))
    return transformer, text_encoder


def comfy_flux(comfy, state: dict):
    """As ComfyUI's diffusion-model loader (comfy.sd.load_diffusion_model_state_dict) reads a file:
    its prefix found and taken off, the config detected from names and shapes, the model built
    (on meta) and the weights loaded. Returns the config, the model, and (missing, unexpected)."""
    prefix = comfy.model_detection.unet_prefix_from_state_dict(state)
    state = comfy.utils.state_dict_prefix_replace(dict(state), {prefix: ""}, filter_keys=True) or state
    config = comfy.model_detection.model_config_from_unet(state, "")
    if config is None:
        return None, None, ([], list(state))
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model(state, "", device=META)
    missing, unexpected = model.diffusion_model.load_state_dict(config.process_unet_state_dict(dict(state)),
                                                                strict=False)
    return config, model, (missing, unexpected)


def check_flux_single_file(comfy, work: Path) -> list[str]:
    problems, counts = [], []
    for variant, expected in (("dev", "Flux"), ("schnell", "FluxSchnell")):
        transformer, _ = flux_parts(work, variant)
        state = to_bfl_state(transformer.state_dict())
        config, _, (missing, unexpected) = comfy_flux(comfy, state)
        detected = type(config).__name__ if config else "nothing"
        if detected != expected:
            problems.append(f"{variant}: detected as {detected}, not {expected}")
            continue
        unet = config.unet_config
        shape = (unet["hidden_size"], unet["depth"], unet["depth_single_blocks"], unet["guidance_embed"])
        if shape != (3072, 19, 38, variant == "dev"):
            problems.append(f"{variant}: detected (width, double, single, guidance) {shape}")
        problems += [f"{variant}: key missing: {k}" for k in missing]
        problems += [f"{variant}: key unused: {k}" for k in unexpected]
        counts.append(f"{variant} {len(state)} keys as {expected}")
    return problems or [f"PASS: {', '.join(counts)}; all loaded"]


def check_flux_lora(comfy, work: Path) -> list[str]:
    from peft import LoraConfig, inject_adapter_in_model

    transformer, text_encoder = flux_parts(work)
    with META:
        transformer.add_adapter(LoraConfig(r=4, lora_alpha=8,
                                           target_modules=list(FLUX_TRANSFORMER_LORA_TARGETS)))
        inject_adapter_in_model(LoraConfig(r=2, lora_alpha=3, target_modules=list(FLUX_TEXT_LORA_TARGETS)),
                                text_encoder)
    lora = flux_lora_state(transformer, text_encoder)
    base, _ = flux_parts(work)
    config, model, _ = comfy_flux(comfy, to_bfl_state(base.state_dict()))
    clip = comfy.sd.CLIP(config.clip_target(state_dict={}), tokenizer_data={}, parameters=0,
                         model_options={"initial_device": META, "load_device": CPU, "offload_device": CPU,
                                        "dtype": torch.bfloat16})
    # What ComfyUI's LoraLoader does (comfy.sd.load_lora_for_models).
    unet_keys = comfy.lora.model_lora_keys_unet(model, {})
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, unet_keys)
    messages = Messages()
    patches = comfy.lora.load_lora(comfy.lora_convert.convert_lora(dict(lora)), key_map)
    problems = [line for line in messages.lines if "lora key not loaded" in line]
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)
    applied = set(patcher.add_patches(patches, 1.0)) | set(clip.add_patches(patches, 1.0))
    problems += [f"patch not applied: {k}" for k in patches if k not in applied]
    layers = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in lora}
    if len(patches) != len(layers):
        problems.append(f"{len(layers)} adapted modules in the file, {len(patches)} patches")
    weights = {**model.state_dict(), **clip.cond_stage_model.state_dict()}
    for key, adapter in patches.items():
        up, down, alpha = adapter.weights[:3]
        name, offset = (key, None) if isinstance(key, str) else key[:2]
        target = list(weights[name].shape)
        if offset is not None:
            target[offset[0]] = offset[2]
        if (up.shape[0], down.shape[1]) != tuple(target):
            problems.append(f"{key}: adapter {tuple(up.shape)} x {tuple(down.shape)} "
                            f"for a {tuple(target)} weight")
        if alpha is None:
            problems.append(f"{key}: no alpha (ComfyUI would scale by 1, not alpha / rank)")
    fused = sum(1 for key in patches if not isinstance(key, str))
    return problems or [f"PASS: {len(lora)} keys of {len(layers)} modules all mapped and applied with "
                        f"their alpha ({fused} onto rows of fused qkv / linear1 weights)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout")
    args = parser.parse_args()
    comfy = import_comfy(args.comfyui)
    failed = False
    with tempfile.TemporaryDirectory(prefix="comfyui-check-") as tmp:
        for name, check in (("single file", check_single_file), ("LoRA", check_lora),
                            ("textual inversion", check_embedding),
                            ("FLUX.1 single file", check_flux_single_file), ("FLUX.1 LoRA", check_flux_lora)):
            work = Path(tmp) / name.replace(" ", "-")
            work.mkdir()
            lines = check(comfy, work)
            failed |= not lines[0].startswith("PASS")
            print(f"{name}: " + "\n    ".join(lines[:20]), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
