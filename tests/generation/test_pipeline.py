"""Rendering: the warning before rendering on the CPU, with the expected time from the measured
figures."""

from dreambooth_core.generation.pipeline import cpu_render_seconds, cpu_render_warning


def test_a_full_size_model_on_the_cpu_is_warned_about_with_the_expected_time():
    warning = cpu_render_warning("stable-diffusion-v1-5/stable-diffusion-v1-5", 8, 20, 512)
    assert warning.startswith("no CUDA GPU: rendering 8 image(s) of 20 steps at 512 px")
    assert f"takes about {round(cpu_render_seconds(8, 20, 512) / 60)} minutes" in warning
    assert "benchmarks/render_speed.py" in warning


def test_larger_images_and_more_steps_take_longer():
    assert cpu_render_seconds(1, 25, 768) > 2 * cpu_render_seconds(1, 25, 512)
    assert cpu_render_seconds(1, 50, 512) > cpu_render_seconds(1, 25, 512)
    assert cpu_render_seconds(2, 25, 512) == 2 * cpu_render_seconds(1, 25, 512)


def test_the_tiny_models_render_in_seconds_without_a_warning():
    assert cpu_render_warning("tiny", 100, 25, 64) is None
