"""What each method trains, as a user is told it before training."""

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import family_of
from dreambooth_core.training.methods import frozen_text_encoder_note


def test_a_text_encoder_phase_the_family_cannot_train_is_said_not_silently_dropped():
    klein, flux, sdxl = (family_of(key) for key in ("flux2-klein", "flux1", "sdxl"))
    assert frozen_text_encoder_note(TrainingSettings(), klein) == (
        "FLUX.2 [klein] 4B and 9B trains no text encoder: its text encoder stays frozen, and "
        "--text-encoder-steps 350 has no effect")
    assert "trains only its first text encoder for 350 steps" in frozen_text_encoder_note(TrainingSettings(), flux)
    assert frozen_text_encoder_note(TrainingSettings(), sdxl) is None
    assert frozen_text_encoder_note(TrainingSettings(text_encoder_steps=0), klein) is None
    assert frozen_text_encoder_note(TrainingSettings(method="lora"), klein) is None  # no phase asked for
