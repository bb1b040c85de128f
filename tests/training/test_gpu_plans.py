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
