"""Library chatter (progress bars, dtype notes) would drown the pipeline's own log.

diffusers and transformers are quieted as they are imported rather than imported to be
quieted: importing diffusers costs seconds, and a run that never needs it (a rerun of a
finished session) should not pay them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

from dreambooth_core.reports.terminal import shows_bars

LOGGING_MODULES = ("diffusers.utils.logging", "transformers.utils.logging")


def quiet_libraries() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    for name in LOGGING_MODULES:
        if name in sys.modules:
            _quiet(sys.modules[name])
    if not any(isinstance(finder, _QuietOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietOnImport())


def _quiet(logging_module) -> None:
    logging_module.set_verbosity_error()
    logging_module.disable_progress_bar()  # transformers' also turns off the Hub's bars
    if shows_bars():  # Hugging Face downloads keep their byte bars on a terminal
        import huggingface_hub.utils

        huggingface_hub.utils.enable_progress_bars()


class _QuietOnImport(importlib.abc.MetaPathFinder):
    """Finds the libraries' logging modules as the normal path finder does, and quiets each
    once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name not in LOGGING_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module  # this spec's own loader: changing it touches no other module

        def exec_module(module) -> None:
            run_module(module)
            _quiet(module)

        spec.loader.exec_module = exec_module
        return spec
