"""Prefect blocks for what must not travel as a flow parameter.

Register them with:  prefect block register -m blocks
"""

from blocks.hugging_face import HuggingFaceCredentials
from blocks.session_storage import SessionStorage

__all__ = ["HuggingFaceCredentials", "SessionStorage"]
