"""What a user's diffusers + transformers compute from our output files.

Imported by the tests (the installed transformers 5.x) and run as a script under
the transformers 4.x overlay that setup.sh installs in .venv/transformers4:

    python tests/export/output_loading.py jobs.json results.pt

Each job loads files the way users do and records the tokenizer's ids for a
prompt, the text encoder's output for them and the UNet's output on fixed inputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PROMPT = "a photo of shrk man"


def fixed_inputs(unet) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    return (torch.randn(1, unet.config.in_channels, size, size, generator=generator),
            torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator))


def pipeline_outputs(pipeline, prompt: str = PROMPT) -> dict:
    ids = pipeline.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents, context = fixed_inputs(pipeline.unet)
    with torch.no_grad():
        return {"ids": ids, "text": pipeline.text_encoder(ids).last_hidden_state,
                "unet": pipeline.unet(latents, 10, context).sample}


def load_pipeline(path: str):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)


def text_encoder_missing_keys(path: str) -> list[str]:
    from transformers import CLIPTextModel

    _, info = CLIPTextModel.from_pretrained(f"{path}/text_encoder", output_loading_info=True)
    return sorted(info["missing_keys"])


def slow_and_fast_ids(path: str) -> tuple[list[int], list[int]]:
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    return tuple(cls.from_pretrained(f"{path}/tokenizer")(PROMPT).input_ids
                 for cls in (CLIPTokenizer, CLIPTokenizerFast))


def sdxl_outputs(path: str) -> dict:
    """What SDXL conditions on and predicts: both encoders' penultimate states, the pooled embedding."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    pipeline = StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)
    ids = [t(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
           for t in (pipeline.tokenizer, pipeline.tokenizer_2)]
    latents, _ = fixed_inputs(pipeline.unet)
    with torch.no_grad():
        first = pipeline.text_encoder(ids[0], output_hidden_states=True)
        second = pipeline.text_encoder_2(ids[1], output_hidden_states=True)
        context = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        size = pipeline.unet.config.sample_size * 8
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)
        unet = pipeline.unet(latents, 10, context, added_cond_kwargs={"text_embeds": second.text_embeds,
                                                                      "time_ids": time_ids}).sample
    missing = [sorted(cls.from_pretrained(f"{path}/{name}", output_loading_info=True)[1]["missing_keys"])
               for cls, name in ((CLIPTextModel, "text_encoder"), (CLIPTextModelWithProjection, "text_encoder_2"))]
    return {"ids": ids[1], "text": context, "pooled": second.text_embeds, "unet": unet, "missing": missing}


def run(job: dict) -> dict:
    """One job: {"kind": "pipeline" | "sdxl" | "lora" | "embedding", "model": folder, "file": ..., "token": ...}."""
    if job["kind"] == "sdxl":
        return sdxl_outputs(job["model"])
    if job["kind"] == "pipeline":
        result = pipeline_outputs(load_pipeline(job["model"]))
        result["missing"] = text_encoder_missing_keys(job["model"])
        result["tokenizers"] = slow_and_fast_ids(job["model"])
        return result
    pipeline = load_pipeline(job["model"])
    if job["kind"] == "lora":
        pipeline.load_lora_weights(job["file"])
        return pipeline_outputs(pipeline)
    pipeline.load_textual_inversion(job["file"])
    row = pipeline.tokenizer.convert_tokens_to_ids(job["token"])
    return {**pipeline_outputs(pipeline, f"a photo of {job['token']} man"),
            "row": pipeline.text_encoder.get_input_embeddings().weight[row].detach()}


def with_transformers4(jobs: list[dict], folder: Path) -> dict:
    """`run` for each job under the transformers 4 overlay of setup.sh, in a subprocess."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    overlay = repo / ".venv" / "transformers4"
    assert (overlay / "transformers").is_dir(), f"{overlay} is missing: run ./setup.sh"
    (folder / "jobs.json").write_text(json.dumps(jobs))
    # Online mode, as users run it: diffusers 0.35 offline asks a LoRA folder for its file name.
    env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"},
           "PYTHONPATH": os.pathsep.join([str(overlay), str(repo)])}
    done = subprocess.run([sys.executable, __file__, str(folder / "jobs.json"), str(folder / "results.pt")],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(folder / "results.pt", weights_only=True)


def versions() -> dict:
    import diffusers
    import transformers

    return {"transformers": transformers.__version__, "diffusers": diffusers.__version__}


def main(jobs_file: str, results_file: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    torch.save({"versions": versions(), "results": [run(job) for job in jobs]}, results_file)


if __name__ == "__main__":
    # diffusers 0.35 cannot be imported beside torchao 0.18 (the project's int8/fp8 bases): its
    # torchao fallback logs through a name it never defined. Users of 0.35 run without torchao.
    sys.modules["torchao"] = None
    main(*sys.argv[1:])
