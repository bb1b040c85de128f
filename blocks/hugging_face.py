"""Block: a Hugging Face access token, for gated or private base models and for publishing."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.redaction import remember_secret


class HuggingFaceCredentials(Block):
    """A Hugging Face access token: read access to the base model; write access to publish."""

    _block_type_name = "Hugging Face Credentials"
    _block_type_slug = "hugging-face-credentials"
    _description = "A Hugging Face access token for gated or private base models and for publishing."

    token: SecretStr = Field(description="A Hugging Face access token (read access; write access "
                                         "to publish), hf_...")

    def reveal_token(self) -> str:
        """The token, for use in this process only; log lines will show it masked."""
        token = self.token.get_secret_value()
        remember_secret(token)
        return token
