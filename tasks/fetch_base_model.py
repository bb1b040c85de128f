"""@task: the base model as a local diffusers folder. Retried on network errors only."""

import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from tasks.config import DreamBoothConfig
from tasks.model.fetch import LocalModel, fetch_model, is_transient

RETRIES = 4


def model_cache_dir() -> Path:
    default = Path.home() / ".cache" / "dreambooth"
    return Path(os.environ.get("DREAMBOOTH_CACHE", default))


def retry_on_network_error(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


@task(name="fetch-base-model", task_run_name="fetch model {config.model}", retries=RETRIES,
      retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_condition_fn=retry_on_network_error)
def fetch_base_model(config: DreamBoothConfig) -> LocalModel:
    return fetch_model(config.model, model_cache_dir(), revision=config.revision,
                       model_config=config.single_file_config,
                       hf_token=hugging_face_token(config), log=get_run_logger())


def hugging_face_token(config: DreamBoothConfig) -> str | None:
    """From the named block, else HF_TOKEN; resolved here so it never travels as a parameter."""
    from blocks.hugging_face import HuggingFaceCredentials
    from blocks.loading import load_block
    from blocks.redaction import remember_secret

    if config.hf_credentials_block:
        return load_block(HuggingFaceCredentials, config.hf_credentials_block, "hf_credentials_block").reveal_token()
    token = os.environ.get("HF_TOKEN")
    remember_secret(token)
    return token
