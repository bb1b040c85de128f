"""The command line: every setting of every section is a flat flag, as it always was."""

import argparse

from dreambooth_core.config import SECTION_OF, DreamBoothConfig
from flows.cli import build_parser
from flows.cli_flags import flag_name


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_every_setting_is_a_flag_of_train_and_upload():
    wanted = {"--session"} | {flag_name(name) for name in SECTION_OF}
    assert flag_name("caption_mode") == "--captions" and flag_name("learning_rate") == "--learning-rate"
    for name in ("train", "upload"):
        flags = {option for action in subcommand(name)._actions for option in action.option_strings}
        assert wanted <= flags, wanted - flags


def test_flat_flags_become_the_config_in_its_sections():
    args = vars(build_parser().parse_args(["train", "--session", "s", "--model", "tiny", "--learning-rate",
                                           "1e-5", "--no-cache-latents", "--class-word", "man", "--gpus", "2",
                                           "--captions", "auto"]))
    del args["command"]
    config = DreamBoothConfig(**args)
    assert (config.base_model.model, config.training.learning_rate, config.runtime.cache_latents,
            config.captions.class_word, config.training.gpus, config.captions.caption_mode) == (
        "tiny", 1e-5, False, "man", 2, "auto")
    assert config.training.seed == 0  # what is not given keeps its default


def test_the_help_groups_the_flags_by_section():
    text = subcommand("train").format_help().split("\noptions:", 1)[1]  # after the usage line
    assert text.index("\nbase model:") < text.index("--revision") < text.index("\ntraining:") < text.index("--seed")
