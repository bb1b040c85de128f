"""The on-disk layout of the hub's own Stable Diffusion repos, whatever transformers is installed.

transformers 5 saves a `CLIPTextModel` without its `text_model.` level and a
CLIP tokenizer as `tokenizer.json` alone; transformers 4.x then loads a random
text encoder (every key "newly initialised") and no tokenizer at all. The hub's
SD 1.5 / 2.1 repos hold `text_model.*` keys, `vocab.json` + `merges.txt` and a
`torch_dtype` config entry, which both major versions read. A folder saved by
`save_pipeline` has that layout (plus `tokenizer.json`, which fast tokenizers use).
A T5 tokenizer (FLUX.1's tokenizer_2) is saved by transformers 5 as class `T5Tokenizer`,
which in 4.x is the sentencepiece one that needs a `spiece.model`; the hub's FLUX.1 repos
name it `T5TokenizerFast`, which both read from `tokenizer.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreambooth_core.captions.tokenizer import bpe_of

TEXT_MODEL = "text_model."
# Bookkeeping transformers 5 adds to tokenizer_config.json; the hub's files have none of it.
_TOKENIZER_RUNTIME_KEYS = ("backend", "is_local", "local_files_only")
_TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
_TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")
_T5_TOKENIZER_CLASSES = ("T5Tokenizer", "T5TokenizerFast")
# transformers 5 writes a list here; 4.x expects a dict and fails on a list.
_EMPTY_LIST_KEYS = ("extra_special_tokens",)


def save_pipeline(pipeline, folder: Path) -> None:
    """`pipeline.save_pretrained(folder)` in safetensors, then made to match the hub's layout."""
    pipeline.save_pretrained(folder, safe_serialization=True)
    to_hub_layout(Path(folder))


def to_hub_layout(folder: Path) -> None:
    """Rewrite the text encoders and tokenizers of the diffusers folder `folder` in place."""
    for name, class_name in _components(folder).items():
        if class_name in _TEXT_ENCODER_CLASSES:
            nest_text_model_keys(folder / name)
            add_torch_dtype(folder / name / "config.json")
        elif class_name == "T5EncoderModel":
            add_torch_dtype(folder / name / "config.json")
        elif class_name in _TOKENIZER_CLASSES:
            write_slow_tokenizer_files(folder / name)
        elif class_name in _T5_TOKENIZER_CLASSES:
            name_t5_tokenizer_fast(folder, name)


def _components(folder: Path) -> dict[str, str]:
    """Component sub-folder -> class name, from model_index.json."""
    index = json.loads((folder / "model_index.json").read_text())
    return {name: entry[1] for name, entry in index.items()
            if isinstance(entry, list) and len(entry) == 2 and entry[1]}


def nested_key(key: str) -> str:
    """The transformers 4.x name of a CLIP text-encoder weight (`text_projection` stays at the top)."""
    if key.startswith((TEXT_MODEL, "text_projection.")):
        return key
    return TEXT_MODEL + key


def nest_text_model_keys(folder: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    index = folder / "model.safetensors.index.json"
    for weights in _weight_files(folder):
        with safe_open(str(weights), framework="pt") as file:
            if all(nested_key(key) == key for key in file.keys()):
                continue
            metadata = file.metadata() or {"format": "pt"}
            state = {nested_key(key): file.get_tensor(key) for key in file.keys()}
        save_file(state, str(weights), metadata)
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {nested_key(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    return [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []


def add_torch_dtype(config: Path) -> None:
    """transformers 4.x before 4.56 reads the weights' dtype from `torch_dtype`, 5.x from `dtype`."""
    data = json.loads(config.read_text())
    if "dtype" in data and "torch_dtype" not in data:
        config.write_text(json.dumps({**data, "torch_dtype": data["dtype"]}, indent=2, sort_keys=True) + "\n")


def write_slow_tokenizer_files(folder: Path) -> None:
    """vocab.json + merges.txt (+ special_tokens_map.json) from tokenizer.json, where they are missing."""
    fast = folder / "tokenizer.json"
    if fast.is_file() and not (folder / "merges.txt").is_file():
        data = json.loads(fast.read_text(encoding="utf-8"))
        vocab, merges = bpe_of(data)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        added = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t["content"] not in vocab}
        if added:
            (folder / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False),
                                                      encoding="utf-8")
    _clean_tokenizer_config(folder)


def name_t5_tokenizer_fast(folder: Path, name: str) -> None:
    """Call the T5 tokenizer in sub-folder `name` of a diffusers folder `T5TokenizerFast`."""
    index = folder / "model_index.json"
    data = json.loads(index.read_text())
    if data[name] != ["transformers", "T5TokenizerFast"]:
        index.write_text(json.dumps({**data, name: ["transformers", "T5TokenizerFast"]}, indent=2,
                                    sort_keys=True) + "\n")
    config = folder / name / "tokenizer_config.json"
    if config.is_file():
        config.write_text(json.dumps({**json.loads(config.read_text(encoding="utf-8")),
                                      "tokenizer_class": "T5TokenizerFast"}, indent=2, sort_keys=True) + "\n")
    _clean_tokenizer_config(folder / name)


def _clean_tokenizer_config(folder: Path) -> None:
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return
    data = json.loads(config.read_text(encoding="utf-8"))
    special = folder / "special_tokens_map.json"
    if not special.is_file():
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        special.write_text(json.dumps({k: data[k] for k in names if k in data}, indent=2) + "\n")
    cleaned = {k: v for k, v in data.items()
               if k not in _TOKENIZER_RUNTIME_KEYS and not (k in _EMPTY_LIST_KEYS and v == [])}
    if cleaned != data:
        config.write_text(json.dumps(cleaned, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
