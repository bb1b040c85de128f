"""Output folders have the on-disk layout of the hub's own Stable Diffusion repos, and load with
transformers 4.x (the overlay setup.sh installs) as they do with the installed 5.x."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import output_loading as loading
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open

from dreambooth_core.captions.tokenizer import load_tokenizer
from dreambooth_core.errors import ModelError
from dreambooth_core.families.sd_embedding import export_embedding
from dreambooth_core.families.sd_lora import DIFFUSERS_FILE, export_lora
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.families.stable_diffusion import STABLE_DIFFUSION
from dreambooth_core.families import load_model_parts

REPO = Path(__file__).resolve().parents[2]

# The files of the hub's stable-diffusion-v1-5/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1
# repos in safetensors form (their .bin, fp16 and .ckpt copies aside); SD 2.1 has no safety_checker.
PUBLISHED = {
    "sd1": {"model_index.json", "feature_extractor/preprocessor_config.json", "safety_checker/config.json",
            "safety_checker/model.safetensors", "scheduler/scheduler_config.json", "text_encoder/config.json",
            "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"},
}
PUBLISHED["sd2"] = PUBLISHED["sd1"] - {"safety_checker/config.json", "safety_checker/model.safetensors"}
# What a trained model leaves out (no safety checker is trained) and adds (the fast tokenizer's file).
NOT_WRITTEN = {"feature_extractor/preprocessor_config.json", "safety_checker/config.json",
               "safety_checker/model.safetensors"}
ADDED = {"tokenizer/tokenizer.json"}


def published_text_encoder_keys(layers: int) -> set[str]:
    """The CLIPTextModel weight names in the hub's SD repos (transformers 4.x names)."""
    keys = {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
            "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"}
    for i in range(layers):
        for module in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2", "self_attn.q_proj",
                       "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"):
            keys |= {f"text_model.encoder.layers.{i}.{module}.{p}" for p in ("weight", "bias")}
    return keys


def _perturb(module, seed: int, only: str = "") -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if only in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


@pytest.fixture(scope="module", params=["tiny", pytest.param("tiny-sd2", marks=pytest.mark.slow)])
def outputs(request, tmp_path_factory) -> dict:
    """A full-model export, a LoRA and an embedding of a slightly changed tiny model, and the base
    model as the hub would hold it (which is what users of transformers 4.x load a LoRA onto)."""
    model = fetch_model(request.param, tmp_path_factory.mktemp("cache"))
    out = tmp_path_factory.mktemp("outputs")
    base = loading.load_pipeline(model.path)
    save_pipeline(base, out / "base")
    parts = load_model_parts(model.path, torch.device("cpu"))
    _perturb(parts.denoiser, 1)
    _perturb(parts.text_encoder, 2)
    parts.family.write_full_model(model.family, model.path, parts, "shrk", 3, torch.float32, out / "full")
    lora = loading.load_pipeline(model.path)
    lora.unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=list(STABLE_DIFFUSION.lora_targets)))
    text_encoder = get_peft_model(lora.text_encoder, LoraConfig(r=4, lora_alpha=8, target_modules=list(STABLE_DIFFUSION.text_lora_targets)))
    _perturb(lora.unet, 3, only="lora_")
    _perturb(text_encoder, 4, only="lora_")
    export_lora(lora.unet, text_encoder, out / "lora", "shrk")
    vector = torch.randn(1, parts.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(5))
    export_embedding("zorx", vector, out / "embedding")
    return {"family": model.family.family, "layers": parts.text_encoder.config.num_hidden_layers,
            "base": str(out / "base"), "full": str(out / "full" / "diffusers"),
            "lora_folder": str(out / "lora" / "shrk-diffusers"), "lora_file": str(out / "lora" / "shrk.safetensors"),
            "embedding": str(out / "embedding" / "zorx-diffusers"), "vector": vector}


def test_files_are_those_of_the_published_repo(outputs):
    for folder in (outputs["full"], outputs["base"]):
        written = {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()}
        assert written == PUBLISHED[outputs["family"]] - NOT_WRITTEN | ADDED


def test_text_encoder_keys_and_config_are_read_by_both_versions(outputs):
    folder = Path(outputs["full"]) / "text_encoder"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as file:
        assert set(file.keys()) == published_text_encoder_keys(outputs["layers"])
    config = json.loads((folder / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "float32"


def test_lora_folder_names_text_encoder_modules_as_transformers_4_does(outputs):
    with safe_open(str(Path(outputs["lora_folder"]) / DIFFUSERS_FILE), framework="pt") as file:
        text_keys = [k for k in file.keys() if k.startswith("text_encoder.")]
    assert text_keys and all(k.startswith("text_encoder.text_model.encoder.layers.") for k in text_keys)


def _jobs(outputs) -> list[dict]:
    return [{"kind": "pipeline", "model": outputs["full"]},
            {"kind": "lora", "model": outputs["base"], "file": outputs["lora_folder"]},
            {"kind": "lora", "model": outputs["base"], "file": outputs["lora_file"]},
            {"kind": "embedding", "model": outputs["base"], "file": outputs["embedding"], "token": "zorx"}]


@pytest.mark.slow  # transformers 4 in a subprocess (about 12 s)
def test_transformers_4_computes_what_transformers_5_does(outputs, tmp_path):
    jobs = _jobs(outputs)
    old = loading.with_transformers4(jobs, tmp_path)
    assert old["versions"]["transformers"].startswith("4.")
    untouched = loading.run({"kind": "pipeline", "model": outputs["base"]})
    for job, got in zip(jobs, old["results"]):
        want = loading.run(job)
        for name in ("ids", "text", "unet"):
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5, msg=f"{job}: {name}")
        if job["kind"] != "embedding":  # the export changed what the model computes
            assert not torch.allclose(want["text"], untouched["text"], atol=1e-3), job
    full, embedding = old["results"][0], old["results"][3]
    assert full["missing"] == [] and full["tokenizers"][0] == full["tokenizers"][1]
    assert torch.equal(embedding["row"], outputs["vector"][0])


# --- tokenizers in each saved form --------------------------------------------------------

def _tokenizer_form(source: str, form: str, target: Path) -> Path:
    shutil.copytree(Path(source) / "tokenizer", target / "tokenizer")
    dropped = {"tokenizer.json only": ("vocab.json", "merges.txt"), "vocab and merges only": ("tokenizer.json",),
               "both": ()}[form]
    for name in dropped:
        (target / "tokenizer" / name).unlink()
    return target


@pytest.mark.parametrize("form", ["tokenizer.json only", "vocab and merges only", "both"])
def test_token_analysis_reads_every_tokenizer_form_alike(form, outputs, tmp_path):
    reference = load_tokenizer(outputs["full"])
    tokenizer = load_tokenizer(_tokenizer_form(outputs["full"], form, tmp_path))
    assert tokenizer.ranks == reference.ranks and len(tokenizer.ranks) > 10
    assert tokenizer.pieces("a photo of shrk man") == reference.pieces("a photo of shrk man")


def test_tokenizer_that_is_not_bpe_is_named(outputs, tmp_path):
    folder = _tokenizer_form(outputs["full"], "tokenizer.json only", tmp_path) / "tokenizer"
    data = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**data, "model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(ModelError, match=r"tokenizer\.json is not a CLIP BPE tokenizer.*WordPiece"):
        load_tokenizer(tmp_path)


def test_tokenizer_folder_without_either_file_is_named(tmp_path):
    (tmp_path / "tokenizer").mkdir()
    with pytest.raises(ModelError, match="neither merges.txt nor tokenizer.json"):
        load_tokenizer(tmp_path)
