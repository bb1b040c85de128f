"""Prefect blocks for what must not travel as a flow parameter.

Register them with:  prefect block register -m blocks

The block classes load on first use: the session storage block needs prefect-gcp, whose
import takes most of a second that a run without blocks need not spend.
"""

import importlib

_MODULES = {"HuggingFaceCredentials": "blocks.hugging_face",
            "SessionStorage": "blocks.session_storage"}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'blocks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES])
