"""`dreambooth plan`: the --memory auto plan on common GPUs, estimated without a GPU."""

import re

import pytest

from flows.cli import main


def rows(output: str) -> dict[str, list[str]]:
    table = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| ") and "GB" in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in table}


@pytest.mark.slow  # the CLI estimates four plans (about 8 s)
def test_plan_prints_every_common_gpu_for_the_tiny_model(tmp_path, capsys):
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", "tiny"]) == 0
    found = rows(capsys.readouterr().out)
    assert list(found) == ["T4 16 GB", "L4 24 GB", "A100 40 GB", "A100 80 GB", "H100 80 GB"]
    assert all(plan == "no concessions" for plan, *_ in found.values())  # a few MB fit anywhere
    assert not any(tmp_path.iterdir())  # planning writes no session


@pytest.mark.slow  # the CLI estimates four plans (about 8 s)
def test_without_bitsandbytes_plans_leave_8_bit_adamw_out_and_say_so(tmp_path, capsys):
    from dreambooth_core.training.memory_plan import eight_bit_problem

    if eight_bit_problem() is None:
        pytest.skip("bitsandbytes imports here")
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", "tiny",
                 "--mixed-precision", "bf16", "--optimizer", "adamw"]) == 0
    output = capsys.readouterr().out
    assert "8-bit AdamW left out: bitsandbytes does not import here" in output
    assert "pip install bitsandbytes" in output and "8-bit AdamW |" not in output


@pytest.mark.slow  # estimates the full SD 1.5 architecture (about 30 s)
def test_the_default_sd15_dreambooth_run_fits_a_t4_with_8_bit_adamw(tmp_path, capsys, monkeypatch):
    """Planned where bitsandbytes imports, as in the project's Docker image."""
    from dreambooth_core.training import memory_plan

    monkeypatch.setattr(memory_plan, "eight_bit_problem", lambda: None)
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--class-word", "man"]) == 0
    output = capsys.readouterr().out
    assert "dreambooth of stable-diffusion-v1-5/stable-diffusion-v1-5 at 512 px" in output
    assert "with prior preservation" in output
    plan, gpu, host, checkpoint = rows(output)["T4 16 GB"]
    assert plan == "8-bit AdamW"
    peak, usable = map(float, re.match(r"([\d.]+) GiB \(([\d.]+)\)", gpu).groups())
    assert peak <= usable <= 14.6
    assert float(host.split()[0]) < 12.7  # a Colab VM's RAM
    assert rows(output)["H100 80 GB"][0] == "no concessions"


@pytest.fixture
def no_download(monkeypatch):
    """Anything the plan would fetch fails the test: a published repo is sized from its configs."""
    from dreambooth_core.families import base_model

    def fetch(*args, **kwargs):
        raise AssertionError(f"plan fetched {args[0]}")

    monkeypatch.setattr(base_model, "fetch_model", fetch)


@pytest.mark.slow  # estimates the full FLUX.1 [dev] architecture, four plans (about 1.5 min)
def test_a_flux_lora_is_planned_on_every_common_gpu_from_published_configs(tmp_path, capsys, no_download):
    assert main(["plan", "--session", "p", "--storage", str(tmp_path),
                 "--model", "black-forest-labs/FLUX.1-dev", "--method", "lora", "--class-word", "man", "--mixed-precision", "bf16"]) == 0
    output = capsys.readouterr().out
    assert "lora of black-forest-labs/FLUX.1-dev at 1024 px" in output and "text encoder frozen" in output
    found = rows(output)
    assert list(found) == ["T4 16 GB", "L4 24 GB", "A100 40 GB", "A100 80 GB", "H100 80 GB"]
    assert found["T4 16 GB"][0] == "does not fit"  # the bf16 transformer alone is 22 GiB
    plan, gpu, host, checkpoint = found["H100 80 GB"]
    peak, usable = map(float, re.match(r"([\d.]+) GiB \(([\d.]+)\)", gpu).groups())
    assert 22 < peak <= usable  # the transformer and T5-XXL held in bf16, and the step
    assert float(checkpoint.split()[0]) < 1  # LoRA weights and their AdamW moments
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("model, family", [("black-forest-labs/FLUX.1-dev", "FLUX.1"),
                                           ("black-forest-labs/FLUX.2-klein-base-4B", "FLUX.2 [klein]")])
def test_textual_inversion_of_flux_is_refused_in_one_line(model, family, tmp_path, capsys, no_download):
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", model,
                 "--method", "textual-inversion"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: --method textual-inversion cannot train {family}:")
    assert err.count("\n") == 1 and "Traceback" not in err and "--method lora" in err
    assert out == ""  # refused before anything is estimated
