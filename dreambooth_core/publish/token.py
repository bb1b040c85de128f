"""The one rule about the publishing token, importable without torch (the CLI checks it at once)."""

from __future__ import annotations

from dreambooth_core.errors import PublishError


def require_token(token: str | None) -> None:
    if not token:
        raise PublishError("publishing needs a Hugging Face token with write access: make one at "
                           "https://huggingface.co/settings/tokens and set HF_TOKEN (or log in "
                           "with `hf auth login`), or name a hugging-face-credentials block with "
                           "--hf-credentials-block.")
