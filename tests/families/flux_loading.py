"""What a user's diffusers + transformers compute from a FLUX.1 folder, with or without a LoRA.

Imported by the tests (the installed transformers 5.x) and run as a script under the
transformers 4.x overlay that setup.sh installs in .venv/transformers4:

    python tests/families/flux_loading.py jobs.json results.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PROMPT = "a photo of shrk dog"


def outputs(pipeline) -> dict:
    """The transformer's prediction on fixed inputs, and both text encoders' ids and outputs for PROMPT."""
    config = pipeline.transformer.config
    generator = torch.Generator().manual_seed(0)
    tokens, context = 16, 8  # a 4 x 4 grid of packed latents, 8 text tokens
    rows, columns = torch.arange(tokens) // 4, torch.arange(tokens) % 4
    image_ids = torch.stack([torch.zeros(tokens), rows.float(), columns.float()], dim=1)
    clip_ids = pipeline.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    t5_ids = pipeline.tokenizer_2(PROMPT, padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        prediction = pipeline.transformer(
            hidden_states=torch.randn(1, tokens, config.in_channels, generator=generator),
            encoder_hidden_states=torch.randn(1, context, config.joint_attention_dim, generator=generator),
            pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator),
            timestep=torch.tensor([0.6]), img_ids=image_ids, txt_ids=torch.zeros(context, 3),
            guidance=torch.tensor([3.5]) if config.guidance_embeds else None).sample
        return {"prediction": prediction, "clip_ids": clip_ids, "t5_ids": t5_ids,
                "pooled": pipeline.text_encoder(clip_ids).pooler_output,
                "t5": pipeline.text_encoder_2(t5_ids)[0]}


def run(job: dict) -> dict:
    """One job: {"model": a diffusers folder, "lora": a LoRA file or folder, or None}."""
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(job["model"], local_files_only=True)
    if job["lora"]:
        pipeline.load_lora_weights(job["lora"])
    return outputs(pipeline)


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


def main(jobs_file: str, results_file: str) -> None:
    import diffusers
    import transformers

    jobs = json.loads(Path(jobs_file).read_text())
    versions = {"transformers": transformers.__version__, "diffusers": diffusers.__version__}
    torch.save({"versions": versions, "results": [run(job) for job in jobs]}, results_file)


if __name__ == "__main__":
    # diffusers 0.35 cannot be imported beside torchao 0.18 (the project's int8/fp8 bases): its
    # torchao fallback logs through a name it never defined. Users of 0.35 run without torchao.
    sys.modules["torchao"] = None
    main(*sys.argv[1:])
