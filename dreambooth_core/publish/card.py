"""The model card (README.md) of a published session: the metadata the hub reads (`base_model`,
`license`, `instance_prompt`, `tags`, `widget`), written with huggingface_hub's ModelCardData,
then what a user needs: trigger words, example prompts, the training settings, the sample grid,
the evaluation, and each file with the tools that load it.

It is made from the session and the files' own headers (training_metadata.py) alone, so the same
session and step give the same card, byte for byte: a rerun uploads nothing new.
"""

from __future__ import annotations

import json

from huggingface_hub import ModelCard, ModelCardData
from pydantic import BaseModel, ConfigDict

from dreambooth_core.evaluation.report import read_evaluation, step_scores
from dreambooth_core.evaluation.session_evaluation import EVALUATION_JSON
from dreambooth_core.export.training_metadata import TrainingRecord, public_name, training_record
from dreambooth_core.publish.contents import PublishedFiles
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import EVALUATION_PNG, LOSS_PNG, samples_settings, steps_named

_METHOD_TAGS = {"dreambooth": ["dreambooth"], "lora": ["lora", "dreambooth"],
                "textual-inversion": ["textual_inversion"]}
_METHOD_TITLES = {"dreambooth": "DreamBooth fine-tune", "lora": "DreamBooth LoRA",
                  "textual-inversion": "textual-inversion embedding"}


class CardFacts(BaseModel):
    """What the card says that is not in the session: the repo and the base model's license."""

    model_config = ConfigDict(frozen=True)
    repo: str
    base_license: str | None
    header: dict[str, str]  # the main file's safetensors metadata


def hub_base_model(model: str) -> str | None:
    """The base model's hub repo id, when it is one (the hub refuses any other `base_model`)."""
    name = public_name(model)
    return name if name == model and "/" in model else None


def model_card(session: Session, files: PublishedFiles, facts: CardFacts) -> str:
    record = training_record(session)
    subjects = require_dataset_manifest(session).subjects
    prompts = _sample_prompts(session, files) or [s.instance_prompt for s in subjects.values()]
    method = record.training.method
    config_model = _stored_model(session)
    base = hub_base_model(config_model)
    data = ModelCardData(
        base_model=base, license=facts.base_license, library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=[tag for tag in ("text-to-image", "diffusers", *_METHOD_TAGS[method],
                              "dreambooth-pipeline",
                              facts.header.get("modelspec.architecture", "").split("/")[0]) if tag],
        instance_prompt=", ".join(s.instance_prompt for _, s in sorted(subjects.items())),
        widget=[{"text": p, "output": {"url": files.sample_grid}} for p in prompts]
        if files.sample_grid else None)
    body = "\n".join([
        f"# {facts.repo.split('/')[-1]}", "",
        f"A {_METHOD_TITLES[method]} of **{record.base_model}** "
        f"({facts.header.get('modelspec.architecture', '?')}) on {sum(map(len, record.captions.values()))} "
        f"photos, trained to step {files.step} of {record.total_steps}.", "",
        *_license_lines(base, facts.base_license),
        "## Trigger words", "",
        *[f"- `{token}`: {s.instance_prompt}" + (f" (class: {s.class_word})" if s.class_word else "")
          for token, s in sorted(subjects.items())], "",
        "## Example prompts", "", *[f"- `{p}`" for p in prompts], "",
        *_samples_lines(files),
        *_evaluation_lines(session, files),
        "## Training settings", "", *_settings_lines(record), "",
        "## Files", "", *_file_lines(files, method, facts.repo), "",
        "Trained with dreambooth-pipeline, a resumable Prefect pipeline; every "
        ".safetensors file carries the training metadata (model-spec and kohya `ss_*` keys) that "
        "AUTOMATIC1111, Forge and model sites show.", ""])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _stored_model(session: Session) -> str:
    from dreambooth_core.session.state import stored_config

    return stored_config(session).base_model.model


def _license_lines(base: str | None, license_: str | None) -> list[str]:
    if license_:
        return [f"License: `{license_}`, carried over from the base model"
                + (f" [{base}](https://huggingface.co/{base})." if base else "."), ""]
    return ["License: that of the base model, which applies to this derivative.", ""]


def _sample_prompts(session: Session, files: PublishedFiles) -> list[str]:
    if not files.sample_grid:
        return []
    step = steps_named([files.sample_grid.rsplit("/", 1)[1].removesuffix(".png")])[0]
    return list(session.read_json(samples_settings(step)).get("prompts", []))


def _samples_lines(files: PublishedFiles) -> list[str]:
    if not files.sample_grid:
        return []
    step = files.sample_grid.rsplit("-", 1)[1].removesuffix(".png").lstrip("0") or "0"
    return ["## Samples", "", f"One row per example prompt, at step {step}, fixed seeds:", "",
            f"![samples]({files.sample_grid})", ""]


def _evaluation_lines(session: Session, files: PublishedFiles) -> list[str]:
    if not files.evaluation:
        return []
    scores = step_scores(read_evaluation(session))
    lines = ["## Evaluation", "",
             "Subject fidelity (DINO, CLIP-I: likeness to the photos) and prompt "
             "fidelity (CLIP-T), as the DreamBooth paper measures them; step 0 is the base model.",
             "", "| step | DINO | CLIP-I | CLIP-T |", "|---:|---:|---:|---:|"]
    lines += [f"| {s.step} | {s.dino:.3f} | {s.clip_i:.3f} | {s.clip_t:.3f} |" for s in scores.values()]
    if session.exists(EVALUATION_JSON):
        recommendation = json.loads(session.read_bytes(EVALUATION_JSON)).get("recommendation", {})
        if recommendation.get("reason"):
            lines += ["", f"Recommended: {recommendation['reason']} (rule: "
                          f"{recommendation['rule']})."]
    return lines + ["", f"![evaluation]({EVALUATION_PNG})", ""]


def _settings_lines(record: TrainingRecord) -> list[str]:
    t = record.training
    rate = f"{t.base_learning_rate:g} ({t.lr_schedule}, {t.warmup_steps} warm-up steps)"
    rows = [("method", t.method), ("base model", record.base_model),
            ("resolution", f"{record.resolution} px"), ("steps", str(record.total_steps)),
            ("learning rate", rate),
            ("batch", f"{t.batch_size} x {t.gradient_accumulation} accumulation x {t.gpus} GPU(s)"),
            ("mixed precision", t.mixed_precision), ("optimizer", t.optimizer),
            ("seed", str(t.seed)),
            ("prior preservation",
             f"{record.class_images} class images" if record.class_images else "off")]
    if t.method == "lora":
        rows.append(("LoRA rank / alpha", f"{t.lora_rank} / {t.lora_scale_alpha:g}"))
    if t.trains_text_encoder:
        rows.append(("text encoder",
                     f"trained for {t.text_encoder_phase} steps at {t.text_encoder_learning_rate:g}"))
    if record.vae:
        rows.append(("VAE", record.vae))
    return ["| setting | value |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows]]


def _file_lines(files: PublishedFiles, method: str, repo: str) -> list[str]:
    names = sorted(files.files)
    singles = [n for n in names if "/" not in n and n.endswith((".safetensors", ".ckpt", ".pt",
                                                                ".yaml"))]
    lines = ["| file | loads in |", "|---|---|"]
    for name in singles:
        lines.append(f"| `{name}` | {_tools(name, method)} |")
    folders = sorted({n.split("/")[0] for n in names if "/" in n and n.split("/")[0].endswith("-diffusers")})
    for folder in folders:
        loader = "load_lora_weights" if method == "lora" else "load_textual_inversion"
        lines.append(f"| `{folder}/` | diffusers: `pipe.{loader}(\"{repo}\", "
                     f"subfolder=\"{folder}\")` |")
    if "model_index.json" in files.files:
        lines.append("| diffusers folders (repo root) | diffusers: "
                     f"`DiffusionPipeline.from_pretrained(\"{repo}\")` |")
    return lines


def _tools(name: str, method: str) -> str:
    if name.endswith(".yaml"):
        return "AUTOMATIC1111 / Forge: the config beside the checkpoint of the same name (v-prediction)"
    if method == "dreambooth":
        return "AUTOMATIC1111, Forge, ComfyUI (checkpoint loader); diffusers `from_single_file`"
    if method == "lora":
        return "AUTOMATIC1111, Forge (`<lora:NAME:1>`), ComfyUI (LoRA loader); diffusers `load_lora_weights`"
    return "AUTOMATIC1111, Forge (embeddings folder: the token in a prompt), ComfyUI (`embedding:NAME`)"
