"""The one configuration object, in sections owned by the parts that use them.

Each part receives its own section. Three sections decide the trained weights and
together form the settings part of the training fingerprint (`DreamBoothConfig.training_values`):
`base_model` (what is trained), `captions` (what each photo is called) and
`training` (how). The others change how a run goes, never what it computes. The whole
fingerprint (`fingerprint_values`: those settings and the content trained on) is made here too.

Field names are unique across sections: the CLI flags (`--learning-rate`) and flat
settings (deployment parameters, `DreamBoothConfig(model=...)`) map onto them one to one.
Derived values (total steps, chunk plan, resolution) come from functions, never written back.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SESSION_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Folders the storage keeps beside its sessions (session/paths.py): no session may take their names.
CLASS_STORE = "class-images"
RESULTS_STORE = ".prefect-results"
SHARED_FOLDERS = {CLASS_STORE: "the class images every session there shares",
                  RESULTS_STORE: "Prefect's task results"}
STEPS_PER_PHOTO = 100
DEFAULT_LEARNING_RATES = {"dreambooth": 2e-6, "lora": 1e-4, "textual-inversion": 5e-4}
DEFAULT_INFERENCE_STEPS = 25  # rendering: DPM-Solver++ gives good images in 20-25 steps
DEFAULT_GUIDANCE_SCALE = 7.5
# Upper bounds no real use comes near, so a typo is refused before it costs memory or days:
# 100-200 steps per photo train a subject; 10^6 steps are over a day on the fastest GPU.
MAX_STEPS = 1_000_000
# Each chunk commits a checkpoint and is a task run, and the plan lists every chunk.
MAX_CHUNKS = 10_000
# Prior preservation uses 200-1,000 class images per subject (the paper: 1,000).
MAX_CLASS_IMAGES = 10_000
# SDXL renders 1024 px; 4x that is past what any family renders whole (subjects repeat), and
# attention memory grows with the square of the pixels.
MAX_IMAGE_SIDE = 4096
MAX_IMAGES_PER_PROMPT = 64
MAX_INFERENCE_STEPS = 500  # schedulers converge in 20-50
# In the fingerprint of a session trained by several processes: how each draws its examples and noise.
RANK_DRAWS = "rows of one process's draws"
DEFAULT_CAPTIONER = "florence-community/Florence-2-base"  # why: dreambooth_core/model/captioner.py
Method = Literal["dreambooth", "lora", "textual-inversion"]


class Section(BaseModel):
    # No setting means anything at infinity or NaN: `--learning-rate inf` would train to NaN.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class InputSettings(Section):
    """Where the session and its photos are, and the names of the blocks that reach them."""

    storage: str = Field("sessions", description="Where sessions live: a folder, memory://, "
                         "or gs://bucket/prefix (any fsspec URL).")
    photos: str | None = Field(None, description="Folder of photos for a new session; later runs "
                               "use the session's own copy.")
    # Cloud: secrets live in Prefect blocks; only block names travel as parameters.
    storage_block: str | None = Field(None, description="Name of a dreambooth-session-storage "
                                      "Prefect block (storage URL and credentials); replaces "
                                      "--storage. Register the block types with 'prefect block "
                                      "register -m blocks'.")
    hf_credentials_block: str | None = Field(None, description="Name of a hugging-face-credentials "
                                             "Prefect block holding the token for a gated or "
                                             "private --model and for --publish-to (default: the "
                                             "HF_TOKEN variable).")


class BaseModelSettings(Section):
    """The model training starts from."""

    model: str = Field("stable-diffusion-v1-5/stable-diffusion-v1-5", description="Base model: "
                       "a Hugging Face repo id, a local diffusers folder, a .ckpt/.safetensors file "
                       "or URL, or 'tiny' (a small random SD 1 model for offline demos and tests; "
                       "'tiny-sd2', 'tiny-sd2-v' for SD 2.x, 'tiny-sdxl' for SDXL, 'tiny-flux', "
                       "'tiny-flux-schnell' for FLUX.1, 'tiny-klein' for FLUX.2 [klein]).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of --model.")
    single_file_config: str | None = Field(None, description="For a single-file --model: a diffusers "
                                           "folder or repo id describing its architecture (for a FLUX "
                                           "transformer file: the model it belongs to, for its VAE and "
                                           "text encoders).")
    vae: str | None = Field(None, description="A VAE in place of the model's own, for training, samples "
                            "and exports: a Hugging Face repo id (e.g. madebyollin/sdxl-vae-fp16-fix, "
                            "SDXL's VAE fixed to run in fp16) or a local diffusers VAE folder. It must "
                            "have the architecture of the model's own VAE.")


class CaptionSettings(Section):
    """What each photo's caption and each subject's class prompt say."""

    token: str | None = Field(None, description="Identifier word for the subject (default: "
                              "taken from the photo file names, 'shrk (1).jpg' -> shrk, or from "
                              "sub-folders of the photos named after each subject's token).")
    instance_prompt: str = Field("photo of {token} {class}", description="Caption of every photo "
                                 "without a caption file; {token} and {class} are replaced by the "
                                 "subject's identifier and class word.")
    class_word: str | None = Field(None, description="What the subjects are: one word for all "
                                   "('man', 'woman', 'person', 'dog', 'style') or one per subject "
                                   "('shrk=man,ohwx=dog'). Captions become 'photo of shrk man'.")
    class_prompt: str = Field("photo of {class}", description="Prompt of the class images; {class} "
                              "is replaced by the subject's class word.")
    # Its flag is --captions (flows/cli_flags.py): a setting may not share its section's name.
    caption_mode: Literal["default", "token", "auto"] = Field(
        "default", description="Captions of the photos without a caption file: 'token' is the instance "
        "prompt alone ('photo of shrk man'); 'auto' describes each photo with --captioner and puts the "
        "token and class word in ('photo of shrk man, smiling, in a red jacket'), written beside each "
        "prepared photo as an editable .txt; 'default' is the family's choice (token for SD 1.x/2.x, "
        "auto for SDXL and FLUX).")
    captioner: str = Field("auto", description="The vision-language model --captions auto describes "
                           f"photos with: a Hugging Face repo of a Florence-2 model in transformers' "
                           f"layout, 'tiny' (a small random one, offline: captions without meaning), or "
                           f"auto: tiny for the built-in tiny base models, else {DEFAULT_CAPTIONER}.")

    def captioner_for(self, base_model: str) -> str:
        if self.captioner != "auto":
            return self.captioner
        return "tiny" if base_model.startswith("tiny") else DEFAULT_CAPTIONER

    @field_validator("class_word")
    @classmethod
    def _class_words(cls, value: str | None) -> str | None:
        parse_class_words(value)
        return value


class CheckSettings(Section):
    """What the checks before training accept."""

    bad_token: Literal["stop", "warn"] = Field("stop", description="When the token analysis calls "
                                               "a subject's token bad: stop before training, or "
                                               "warn and train anyway.")
    subject_type: Literal["auto", "person", "other"] = Field("auto", description="Whether the "
                                                         "subjects are people, which turns on the "
                                                         "face checks (one face per photo, framing "
                                                         "mix): auto decides from the class word "
                                                         "(person, man, woman, girl... or none: "
                                                         "person; dog, style...: other).")
    allow_several_faces: bool = Field(False, description="Accept photos of a person subject that "
                                      "show several faces (otherwise an error).")


class TrainingSettings(Section):
    """Everything that decides the trained weights, except what the base model and the
    captions decide. `steps` may grow on a finished session (see `fingerprint_values`)."""

    resolution: int | None = Field(None, ge=64, description="Training size in pixels, a multiple "
                                   "of 8 (default: the base model's own, 512 for SD 1.x).")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description=f"Total UNet training steps (default: "
                              f"{STEPS_PER_PHOTO} x number of photos).")
    seed: int = Field(0, ge=0, description="Seed of all training randomness.")
    method: Method = Field(
        "dreambooth", description="What to train: dreambooth (the whole UNet, a full model), lora "
        "(small adapters, a few-MB file) or textual-inversion (one new word's embedding).")
    learning_rate: float | None = Field(None, gt=0, description="Learning rate (default: 2e-6 "
                                        "dreambooth, 1e-4 lora, 5e-4 textual-inversion).")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warm-up, decaying to 0 at the last "
        "step for linear and cosine.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear learning-rate warm-up from 0.")
    batch_size: int = Field(1, ge=1, description="Photos per micro-batch (each with a class image "
                            "when prior preservation is on).")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step; "
                                       "the effective batch is batch size x this.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="Autocast precision: auto is bf16 on GPUs that have it, fp16 (with a "
        "loss scaler) on older GPUs, no (fp32) on CPU.")
    optimizer: Literal["adamw", "adamw-8bit"] = Field(
        "adamw", description="adamw, or adamw-8bit (bitsandbytes, CUDA only: a quarter of the "
        "optimizer memory).")
    offset_noise: float = Field(0.0, ge=0, description="Offset-noise strength (e.g. 0.1) for "
                                "darker darks and brighter brights; 0 is off.")
    min_snr_gamma: float = Field(0.0, ge=0, description="Min-SNR loss weighting gamma (5 is "
                                 "the paper's); 0 is off.")
    flip: bool = Field(False, description="Randomly mirror photos left-right (doubles the "
                       "variety; avoid for asymmetric subjects such as text or a side parting).")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="Keep an exponential moving average of "
                             "the UNet weights with this decay (e.g. 0.999) and export it; 0 is off.")
    text_encoder_steps: int = Field(350, ge=0, description="Train the text encoder with the UNet "
                                    "for the first N steps, then freeze it; 0 is off.")
    text_encoder_learning_rate: float = Field(1e-6, gt=0, description="Text encoder learning rate.")
    class_images: int = Field(200, ge=0, le=MAX_CLASS_IMAGES, description="Prior preservation: class "
                              "images per subject, generated once with the base model and reused; "
                              "used when a class word is set; 0 is off.")
    class_images_folder: str | None = Field(None, description="Your own class images instead of "
                                            "generated ones (sub-folders per subject token when "
                                            "subjects differ in class).")
    prior_loss_weight: float = Field(1.0, ge=0, description="Weight of the prior-preservation loss.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (adapter size).")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (scale alpha/rank; "
                                     "default: the rank).")
    lora_text_encoder: bool = Field(False, description="LoRA: adapters on the text encoder too, "
                                    "for the --text-encoder-steps phase.")
    initializer_word: str | None = Field(None, description="Textual inversion: the word whose "
                                         "embedding the new token starts from (default: the class "
                                         "word, else 'person').")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    step_in_backward: bool = Field(False, description="Update each weight as soon as its gradient "
                                   "is computed and free that gradient: no memory for the whole "
                                   "model's gradients (SDXL DreamBooth: 9.6 GiB less). Each weight's "
                                   "gradient is then clipped on its own; needs --gradient-accumulation "
                                   "1, one GPU, and bf16 or no mixed precision.")
    base_precision: Literal["auto", "bf16", "fp16", "fp8", "int8", "nf4"] = Field(
        "auto", description="How the frozen base weights are held: auto (the mixed precision, or a "
        "quantised base when --memory auto needs one to fit), bf16, fp16, or quantised: fp8, int8 "
        "(8-bit) or nf4 (4-bit, QLoRA); the trained weights stay bf16/fp32.")
    buckets: Literal["auto", "on", "off"] = Field(
        "auto", description="Aspect-ratio buckets: each photo keeps its shape in the nearest of a set of "
        "sizes of the training resolution's pixel area (832x1216 for a portrait at 1024 px), cropped "
        "around the face, instead of a square; off: square crops. auto: on for the families trained "
        "at 1024 px (SDXL, FLUX), off for SD 1.x / 2.x; a session keeps what it started training with.")
    masked_loss: bool = Field(False, description="Weight each photo's loss by a mask of the subject, so the "
                              "background is learnt less: from a mask file beside the photo "
                              "('shrk (1).mask.png', white = subject) or found by a segmentation model "
                              "(CLIPSeg) prompted with the class word. Class images are never masked.")
    mask_floor: float = Field(0.1, ge=0, le=1, description="With --masked-loss, the weight of the background "
                              "(the subject's is 1); 1 is no masking.")
    gpus: int = Field(1, ge=1, description="Data-parallel processes, one per GPU (with --device cpu: "
                      "CPU processes); the effective batch is batch size x accumulation x gpus.")
    shard: bool = Field(False, description="Full DreamBooth on --gpus N: each GPU holds 1/N of the trained "
                        "weights, their gradients and optimizer state (FSDP2) instead of all of them, for a "
                        "model that does not fit one GPU. Checkpoints are sharded too, and resume on another "
                        "number of GPUs that keeps the whole batch (batch size x gpus).")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"resolution {value} is not a multiple of 8; try {value - value % 8}")
        return value

    @model_validator(mode="after")
    def _step_in_backward_needs_whole_steps(self) -> "TrainingSettings":
        if self.step_in_backward and (needs := self.step_in_backward_needs()):
            raise ValueError(f"--step-in-backward needs {needs[0]}")
        return self

    @model_validator(mode="after")
    def _ema_averages_unet_weights(self) -> "TrainingSettings":
        if self.ema_decay and self.method == "textual-inversion":
            raise ValueError("--ema-decay averages UNet weights, which textual inversion does not train. "
                             "Drop --ema-decay, or use --method dreambooth or lora")
        return self

    @model_validator(mode="after")
    def _shard_runs(self) -> "TrainingSettings":
        if self.shard and (needs := self.shard_needs()):
            raise ValueError(f"--shard needs {'; and '.join(needs)}")
        return self

    def shard_needs(self) -> list[str]:
        """What these settings would have to change for --shard to train; [] if nothing."""
        return [why for wrong, why in (
            (self.gpus < 2, "--gpus 2 or more (it spreads the model over the GPUs)"),
            (self.method != "dreambooth", f"--method dreambooth (--method {self.method} trains few weights, "
             "which every GPU holds whole)"),
            (self.mixed_precision == "fp16", "--mixed-precision bf16 or no, not fp16 (loss scaling would "
             "decide to skip a step on each GPU's share of the gradients alone)"),
            (self.optimizer == "adamw-8bit", "--optimizer adamw (bitsandbytes' 8-bit AdamW does not take "
             "sharded weights)")) if wrong]

    def step_in_backward_needs(self) -> list[str]:
        """What these settings would have to change for --step-in-backward to train; [] if nothing."""
        return [why for wrong, why in (
            (self.gradient_accumulation > 1, "--gradient-accumulation 1: the weights are updated in every "
             "backward pass"),
            (self.gpus > 1, "--gpus 1: with several processes gradients are averaged after they "
             "are computed"),
            (self.mixed_precision == "fp16", "--mixed-precision bf16 or no, not fp16: loss scaling checks "
             "every gradient before any update")) if wrong]

    def uses_buckets(self, family_default: bool) -> bool:
        """Whether photos go into aspect-ratio buckets; `family_default`: the base model family's choice."""
        return family_default if self.buckets == "auto" else self.buckets == "on"

    @property
    def base_learning_rate(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATES[self.method]

    @property
    def text_encoder_phase(self) -> int:
        """Steps the text side trains: textual inversion trains only its new embeddings."""
        return 0 if self.method == "textual-inversion" else self.text_encoder_steps

    @property
    def trains_text_encoder(self) -> bool:
        return self.text_encoder_phase > 0 and (self.method == "dreambooth" or self.lora_text_encoder)

    @property
    def lora_scale_alpha(self) -> float:
        return self.lora_alpha or self.lora_rank

    def resolution_for(self, native: int) -> int:
        """The training resolution: --resolution, else the base model's own."""
        return self.resolution or native

    def total_steps(self, photo_count: int) -> int:
        return self.steps if self.steps is not None else STEPS_PER_PHOTO * photo_count

    def fingerprint_values(self) -> dict[str, Any]:
        """`steps` is absent on purpose: with a constant learning rate, randomness drawn per
        step and data order per epoch, training to 2000 steps passes through the exact state a
        500-step run ends in, so a finished session can be trained further. (A decaying
        schedule's shape depends on it: the plan adds it then.)"""
        return self.model_dump(exclude={"steps"})


class SampleSettings(Section):
    """Sample images and snapshots written while training."""

    sample_prompts: str | None = Field(None, description="Your own sample prompts, separated by "
                                       "';', rendered after each subject's caption; {token} and "
                                       "{class} are filled in per subject.")
    sample_every: int = Field(1, ge=0, description="Render samples after every N chunks "
                              "(samples/step-N.png and the UI); 0 is never.")
    sample_steps: int = Field(20, ge=1, description="Inference steps of each sample image.")
    snapshot_every: int = Field(0, ge=0, description="Also save a small fp16 model (or LoRA, or "
                                "embedding) every N steps in snapshots/, to pick the best later; "
                                "0 is off.")
    keep_snapshots: int = Field(3, ge=1, description="Snapshots to keep (the newest).")

    @property
    def own_prompts(self) -> list[str]:
        return [p.strip() for p in (self.sample_prompts or "").split(";") if p.strip()]


class EvaluationSettings(Section):
    """Measuring the checkpoints while training (dreambooth evaluate measures them after)."""

    evaluate_every: int = Field(0, ge=0, description="After every N chunks (and the last), measure "
                                "subject fidelity (DINO, CLIP-I) and prompt fidelity (CLIP-T) of the "
                                "new checkpoint into reports/evaluation.* and the UI, with the "
                                "recommended step; 0 is off. Never changes the trained weights.")
    evaluation_judges: Literal["auto", "hub", "tiny"] = Field(
        "auto", description="The judging models: hub (facebook/dino-vits16 and "
        "openai/clip-vit-large-patch14, fetched once), tiny (small random ones, offline: numbers "
        "without meaning); auto: tiny for the built-in tiny base models, else hub.")
    evaluation_prompts: int = Field(4, ge=1, le=25, description="Prompts per subject, of the paper's 25.")
    evaluation_images: int = Field(2, ge=1, le=MAX_IMAGES_PER_PROMPT, description="Images per prompt.")
    evaluation_inference_steps: int = Field(20, ge=1, le=MAX_INFERENCE_STEPS,
                                            description="Denoising steps of each image.")

    def judges_for(self, base_model: str) -> str:
        if self.evaluation_judges != "auto":
            return self.evaluation_judges
        return "tiny" if base_model.startswith("tiny") else "hub"


class ExportSettings(Section):
    """The final output files."""

    export_precision: Literal["fp16", "fp32"] = Field("fp16", description="Precision of the "
                                                      "exported .ckpt/.safetensors files (FLUX's full "
                                                      "models: bf16 for fp16, which their activations "
                                                      "overflow).")
    publish_to: str | None = Field(None, description="A Hugging Face model repo (USER/NAME) the finished "
                                   "training publishes itself to, with a model card (token: HF_TOKEN or "
                                   "--hf-credentials-block); a rerun uploads only what changed.")
    publish_private: bool = Field(False, description="Create the --publish-to repo private.")

    @field_validator("publish_to")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        if value is not None and (value.count("/") != 1 or not all(value.split("/"))):
            raise ValueError(f"{value!r} is not a Hugging Face repo id: give USER/NAME, e.g. alice/shrk-lora")
        return value


class RuntimeSettings(Section):
    """How and where training runs: speed, memory and robustness, never the result."""

    device: str = Field("auto", description="Training device: auto (CUDA when available), cpu, cuda.")
    chunk_steps: int = Field(500, ge=1, description="Steps between committed checkpoints; "
                             "a killed run loses at most this many.")
    keep_checkpoints: int = Field(2, ge=2, description="Committed checkpoints to keep (at least 2).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward "
                                         "pass: much less GPU memory, about a third slower; same result.")
    cache_latents: bool = Field(True, description="Encode each photo (and its mirror image) with "
                                "the VAE once, not at every step; same result, faster.")
    cache_text_embeddings: bool = Field(True, description="Encode each caption once while the "
                                        "text encoders are frozen (kept in the session), and hold "
                                        "the encoders in host memory meanwhile; same result, faster, "
                                        "less GPU memory.")
    offload: bool = Field(False, description="Keep the trained model's blocks in host memory and "
                          "stream each to the GPU as it is needed (full fine-tunes on small GPUs): "
                          "much less GPU memory, slower.")
    channels_last: bool = Field(False, description="UNet in channels-last memory layout (can be "
                                "faster with mixed precision on GPUs).")
    compile: bool = Field(False, description="torch.compile the UNet: slower start, faster "
                          "steps on GPUs.")
    preemption_grace: float = Field(25.0, ge=0, description="Seconds between SIGTERM and the "
                                    "machine going away (preemptible cloud GPUs: ~30): training "
                                    "stops after the current step and commits a checkpoint if "
                                    "saving fits in this time.")
    lease_wait: float = Field(0, ge=0, description="Seconds to wait when another run is training "
                              "the same session, before giving up.")
    nnodes: int = Field(1, ge=1, description="Machines the --gpus processes are spread over, the same "
                        "number on each; every machine runs the same command with its own --node-rank.")
    node_rank: int = Field(0, ge=0, description="This machine's place among --nnodes: 0 runs the "
                           "pipeline and trains; the others only train.")
    rdzv_endpoint: str | None = Field(None, description="host:port on machine 0 where the machines meet "
                                      "(torchrun's static rendezvous); needed with --nnodes above 1.")
    rank_timeout: float = Field(1800, gt=0, description="Seconds a training process waits for the others "
                                "in a collective before the run ends naming the rank that stopped "
                                "answering (a hung process, a lost machine).")
    memory: Literal["auto", "none"] = Field("auto", description="auto: on a GPU, estimate the peak "
                                            "memory and train with the fastest plan that fits (8-bit "
                                            "AdamW, then gradient checkpointing, then the optimizer "
                                            "step in backward), chosen once per "
                                            "session; none: the settings as given.")


def offload_needs(training: TrainingSettings, runtime: RuntimeSettings) -> list[str]:
    """What these settings would have to change for --offload to train; [] if nothing."""
    return [why for wrong, why in (
        (training.method != "dreambooth", f"--method dreambooth (--method {training.method} trains few "
         "weights; for a smaller frozen model use --base-precision)"),
        (not training.step_in_backward, "--step-in-backward (each block's weights are updated on the GPU "
         "before they go back to the host)"),
        (training.ema_decay > 0, "--ema-decay 0 (the average of the weights would be a second full model "
         "on the GPU)"),
        (runtime.compile, "no --compile (moving weights between devices breaks compiled graphs)")) if wrong]


def offload_device_problem(device_type: str) -> str | None:
    if device_type == "cuda":
        return None
    return (f"--offload keeps the trained model in host memory and copies it to the GPU block by block; "
            f"this run trains on {device_type}, where there is nothing to offload to. Drop --offload")


def optimizer_device_problem(optimizer: str, device_type: str) -> str | None:
    """Why `optimizer` cannot train on a `device_type` device, or None."""
    if optimizer != "adamw-8bit" or device_type == "cuda":
        return None
    return (f"--optimizer adamw-8bit needs a CUDA GPU (bitsandbytes); this run trains on {device_type}. "
            "Use --optimizer adamw")


class MemoryPlan(BaseModel):
    """The memory-saving choices training runs with, and what they were chosen against."""

    model_config = ConfigDict(frozen=True)
    optimizer: Literal["adamw", "adamw-8bit"]
    gradient_checkpointing: bool
    step_in_backward: bool = False
    base_precision: str = "auto"    # what the frozen base is held in
    offload: bool = False
    estimated_peak_bytes: int | None = None  # None: not estimated (training on the CPU)
    budget_bytes: int | None = None          # what the GPU had usable when it was chosen

    def apply(self, training: TrainingSettings,
              runtime: RuntimeSettings) -> tuple[TrainingSettings, RuntimeSettings]:
        return (training.model_copy(update={"optimizer": self.optimizer,
                                            "step_in_backward": self.step_in_backward,
                                            "base_precision": self.base_precision}),
                runtime.model_copy(update={"gradient_checkpointing": self.gradient_checkpointing,
                                           "offload": self.offload}))

    def describe(self) -> str:
        made = [name for name, on in (("8-bit AdamW", self.optimizer == "adamw-8bit"),
                                      ("gradient checkpointing", self.gradient_checkpointing),
                                      (f"{self.base_precision} base",
                                       self.base_precision in ("fp8", "int8", "nf4")),
                                      ("optimizer step in backward", self.step_in_backward),
                                      ("offload", self.offload)) if on]
        return " + ".join(made) or "no concessions"


class DreamBoothConfig(BaseModel):
    """Everything a training run needs. CLI flags, YAML and deployment parameters all
    become this object; settings may be given flat (by name) or in their sections."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # The sections that decide the trained weights: the training fingerprint.
    TRAINING_SECTIONS: ClassVar[tuple[str, ...]] = ("base_model", "captions", "training")
    # Training settings added after sessions had recorded fingerprints, with what those sessions trained
    # as: at that value a setting is left out of the fingerprint, so the sessions keep their fingerprint
    # and resume (a --vae's digest is in the model's). A new setting that changes training goes here.
    ADDED_LATER: ClassVar[dict[str, Any]] = {"vae": None, "step_in_backward": False, "base_precision": "auto",
                                           "buckets": "auto", "masked_loss": False, "mask_floor": 0.1,
                                           "caption_mode": "default", "captioner": "auto",
                                           "shard": False}

    session: str = Field(description="Session name: letters, digits, '.', '_' or '-' (at most 64). "
                         "The session holds photos, progress and outputs; rerun it to resume.")
    inputs: InputSettings = Field(InputSettings(), description="Where the session and its photos are.")
    base_model: BaseModelSettings = Field(BaseModelSettings(), description="The model training starts from.")
    captions: CaptionSettings = Field(CaptionSettings(), description="Tokens, captions and class words.")
    checks: CheckSettings = Field(CheckSettings(), description="What the checks before training accept.")
    training: TrainingSettings = Field(TrainingSettings(), description="What decides the trained weights.")
    samples: SampleSettings = Field(SampleSettings(), description="Samples and snapshots while training.")
    evaluation: EvaluationSettings = Field(EvaluationSettings(), description="Measuring the checkpoints "
                                           "while training.")
    export: ExportSettings = Field(ExportSettings(), description="The final output files.")
    runtime: RuntimeSettings = Field(RuntimeSettings(), description="Device, chunks and other "
                                     "settings that change speed, never the result.")

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_settings(cls, data: Any) -> Any:
        """{'session': 's', 'model': 'tiny'} -> {'session': 's', 'base_model': {'model': 'tiny'}}."""
        return nest_settings(data) if isinstance(data, dict) else data

    @field_validator("session")
    @classmethod
    def _session_name(cls, name: str) -> str:
        if problem := session_name_problem(name):
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _machines(self) -> "DreamBoothConfig":
        nodes, gpus, runtime = self.runtime.nnodes, self.training.gpus, self.runtime
        if gpus % nodes:
            raise ValueError(f"--gpus {gpus} is the total over --nnodes {nodes} machines, the same number "
                             f"on each: pass a multiple of {nodes}")
        if runtime.node_rank >= nodes:
            raise ValueError(f"--node-rank {runtime.node_rank} is not one of the {nodes} machines "
                             f"(0 to {nodes - 1})")
        if nodes > 1 and not runtime.rdzv_endpoint:
            raise ValueError(f"--nnodes {nodes} needs --rdzv-endpoint HOST:PORT, an address of machine 0 "
                             "that every machine reaches")
        return self

    @model_validator(mode="after")
    def _chunk_count(self) -> "DreamBoothConfig":
        steps = self.training.steps
        if steps and (problem := too_many_chunks(steps, self.runtime.chunk_steps)):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _offload_runs(self) -> "DreamBoothConfig":
        """--device auto resolves later (plan.py checks it then); cpu is refused at once."""
        if self.runtime.offload:
            if needs := offload_needs(self.training, self.runtime):
                raise ValueError(f"--offload needs {'; and '.join(needs)}")
            if self.runtime.device == "cpu":
                raise ValueError(offload_device_problem("cpu"))
        return self

    @model_validator(mode="after")
    def _optimizer_runs(self) -> "DreamBoothConfig":
        """--device auto resolves later (plan.py checks it then); cpu is refused at once."""
        problem = optimizer_device_problem(self.training.optimizer, self.runtime.device)
        if self.runtime.device == "cpu" and problem:
            raise ValueError(problem)
        return self

    def training_values(self) -> dict[str, Any]:
        """The settings whose change would change the trained weights, flat."""
        values: dict[str, Any] = {}
        for name in self.TRAINING_SECTIONS:
            section = getattr(self, name)
            values |= section.fingerprint_values() if name == "training" else section.model_dump()
        for name, before in self.ADDED_LATER.items():
            if values.get(name) == before:
                values.pop(name, None)  # as sessions from before the setting recorded it
        if self.training.gpus > 1:
            # Since processes take their rows of one process's draws (training/data/batches.py),
            # not draws of their own: a session trained by several before then resumes with other draws.
            values["draws"] = RANK_DRAWS
        if self.training.shard:
            # Sharded checkpoints resume on any number of processes that draws the same whole batch.
            values["whole_batch"] = values.pop("batch_size") * values.pop("gpus")
        return values

    def flat(self) -> dict[str, Any]:
        """Every setting under its flag's name."""
        return {"session": self.session} | {
            name: value for section in SECTIONS
            for name, value in getattr(self, section).model_dump().items()}


SECTIONS: dict[str, type[Section]] = {
    name: field.annotation for name, field in DreamBoothConfig.model_fields.items() if name != "session"}
# Setting name -> the section that holds it (names are unique across sections).
SECTION_OF: dict[str, str] = {name: section for section, kind in SECTIONS.items()
                              for name in kind.model_fields}
assert len(SECTION_OF) == sum(len(kind.model_fields) for kind in SECTIONS.values()), \
    "a setting is in two sections"


def fingerprint_values(config: DreamBoothConfig, total: int, precision: str, model_digest: str,
                       dataset_digest: str, class_images_digest: str | None = None,
                       masks_digest: str | None = None) -> dict[str, Any]:
    """The training fingerprint: what the trained weights depend on. The training sections
    (`training_values`) resolved (`precision`: the mixed precision on the device it trains on),
    and the content of the model, the prepared dataset with its captions, the class images and
    the masks."""
    training = config.training
    values = {**config.training_values(), "learning_rate": training.base_learning_rate,
              "mixed_precision": precision, "model content": model_digest, "dataset": dataset_digest}
    if class_images_digest:
        values["class images"] = class_images_digest
    if training.lr_schedule != "constant":
        values["steps"] = total  # the schedule's shape depends on it
    if training.masked_loss:
        values["masks"] = masks_digest
    return values


def differing_fields(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The names whose values differ between two fingerprints (or their training values)."""
    return sorted(k for k in stored.keys() | given.keys() if stored.get(k) != given.get(k))


def session_name_problem(name: str) -> str | None:
    """Why `name` cannot name a session (it would leave the storage root, or is a name the storage
    uses itself), or None; the one session-name rule (session.folder.Session applies it too)."""
    if not SESSION_NAME.match(name) or name in {".", ".."}:
        return (f"session name {name!r} is not allowed: use at most 64 letters, digits, '.', '_' or '-' "
                "(no slashes, no '..')")
    if name in SHARED_FOLDERS:
        return (f"session name {name!r} is reserved: the storage keeps {SHARED_FOLDERS[name]} in that "
                "folder. Choose another --session name")
    if name.startswith("."):
        return (f"session name {name!r} is reserved: names starting with '.' are kept for the storage's "
                "own folders. Choose another --session name")
    return None


def too_many_chunks(total: int, chunk_steps: int) -> str | None:
    """Why `total` steps cannot be cut into chunks of `chunk_steps`, or None when they can."""
    chunks = -(-total // chunk_steps)
    if chunks <= MAX_CHUNKS:
        return None
    return (f"--chunk-steps {chunk_steps} cuts {total} steps into {chunks} chunks, each committing a "
            f"checkpoint; at most {MAX_CHUNKS} are allowed: pass --chunk-steps {-(-total // MAX_CHUNKS)} "
            "or more")


def nest_settings(data: dict[str, Any]) -> dict[str, Any]:
    """Flat settings moved into their sections, merged with any section given whole."""
    nested = {name: value for name, value in data.items() if name not in SECTION_OF}
    for name, value in data.items():
        if name in SECTION_OF:
            section = nested.get(SECTION_OF[name], {})
            if isinstance(section, BaseModel):
                section = section.model_dump()
            nested[SECTION_OF[name]] = {**section, name: value}
    return nested


def parse_class_words(spec: str | None) -> dict[str | None, str]:
    """'man' -> {None: 'man'} (every subject); 'shrk=man,ohwx=dog' -> {'shrk': 'man', 'ohwx': 'dog'}.

    A bare word and token=word entries may be mixed: the bare word covers the rest."""
    words: dict[str | None, str] = {}
    if spec is None or not spec.strip():
        return words
    for entry in spec.split(","):
        token, _, word = entry.rpartition("=")
        token, word = token.strip().lower() or None, word.strip()
        if not word or (token is None and "=" in entry) or token in words:
            raise ValueError(f"class word entry {entry.strip()!r} in {spec!r} is not valid: give one "
                             "word for every subject ('man') or token=word pairs separated by commas "
                             "('shrk=man,ohwx=dog'), each token once")
        words[token] = word
    return words


class GenerationSettings(BaseModel):
    """How `dreambooth generate` renders its prompts (besides the weights)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    seed: int = Field(0, description="Seed of the starting noise: image m of every prompt starts "
                      "from the same noise.")
    count: int = Field(1, ge=1, le=MAX_IMAGES_PER_PROMPT, description="Images per prompt.")
    guidance_scale: float | None = Field(None, ge=0, description="Guidance scale: higher follows the prompt "
                                         "more closely (default: the model family's; "
                                         f"{DEFAULT_GUIDANCE_SCALE} for Stable Diffusion).")
    inference_steps: int = Field(DEFAULT_INFERENCE_STEPS, ge=1, le=MAX_INFERENCE_STEPS,
                                 description="Denoising steps per image.")
    negative_prompt: str = Field("", description="What the images should not show (empty: none).")
    width: int | None = Field(None, ge=64, le=MAX_IMAGE_SIDE, multiple_of=8, description="Image width "
                              "in pixels (default: the session's training resolution).")
    height: int | None = Field(None, ge=64, le=MAX_IMAGE_SIDE, multiple_of=8, description="Image height "
                               "in pixels (default: the session's training resolution).")
