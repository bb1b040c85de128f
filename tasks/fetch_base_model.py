"""@task: the base model as a local diffusers folder. Retried on network errors only."""

import os

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from dreambooth_core.config import BaseModelSettings
from dreambooth_core.model.cache import model_cache_dir
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.model.fetch import is_transient
from dreambooth_core.families.base_model import fetch_base

RETRIES = 4


def retry_on_network_error(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


@task(name="fetch-base-model", task_run_name="fetch model {base.model}", retries=RETRIES,
      retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_condition_fn=retry_on_network_error)
def fetch_base_model(base: BaseModelSettings, hf_credentials_block: str | None = None) -> LocalModel:
    return fetch_base(base, model_cache_dir(), hugging_face_token(hf_credentials_block), get_run_logger())


def hugging_face_token(block_name: str | None) -> str | None:
    """From the named block, else HF_TOKEN; resolved here so it never travels as a parameter."""
    from blocks.hugging_face import HuggingFaceCredentials
    from blocks.loading import load_block
    from blocks.redaction import remember_secret

    if block_name:
        return load_block(HuggingFaceCredentials, block_name, "hf_credentials_block").reveal_token()
    token = os.environ.get("HF_TOKEN")
    remember_secret(token)
    return token
