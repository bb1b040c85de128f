"""`dreambooth plan`: the --memory auto plan on common GPUs, estimated without a GPU."""

import re

import pytest

from flows.cli import main


def rows(output: str) -> dict[str, list[str]]:
    table = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| ") and "GB" in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in table}


GPUS = ["RTX 3060 12 GB", "T4 16 GB", "RTX 4060 Ti 16 GB", "L4 24 GB", "A100 40 GB", "A100 80 GB", "H100 80 GB"]


@pytest.mark.slow  # the CLI estimates four plans (about 8 s)
def test_plan_prints_every_common_gpu_for_the_tiny_model(tmp_path, capsys):
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", "tiny"]) == 0
    found = rows(capsys.readouterr().out)
    assert list(found) == GPUS
    assert all(plan == "no concessions" for plan, *_ in found.values())  # a few MB fit anywhere
    assert found["T4 16 GB"][1:3] == ["fp16", "no"] and found["H100 80 GB"][1:3] == ["bf16", "no"]  # base, offload
    assert not any(tmp_path.iterdir())  # planning writes no session


@pytest.mark.slow  # the CLI estimates four plans (about 8 s)
def test_without_bitsandbytes_plans_leave_8_bit_adamw_out_and_say_so(tmp_path, capsys):
    from dreambooth_core.training.memory.plan import eight_bit_problem

    if eight_bit_problem() is None:
        pytest.skip("bitsandbytes imports here")
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", "tiny",
                 "--mixed-precision", "bf16", "--optimizer", "adamw"]) == 0
    output = capsys.readouterr().out
    assert "8-bit AdamW and a quantised base left out: bitsandbytes does not import here" in output
    assert "pip install bitsandbytes" in output and "8-bit AdamW |" not in output


@pytest.mark.slow  # estimates the full SD 1.5 architecture (about 30 s)
def test_the_default_sd15_dreambooth_run_fits_a_t4_with_8_bit_adamw(tmp_path, capsys, monkeypatch):
    """Planned where bitsandbytes imports, as in the project's Docker image."""
    from dreambooth_core.training.memory import plan as memory_plan

    monkeypatch.setattr(memory_plan, "eight_bit_problem", lambda: None)
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--class-word", "man"]) == 0
    output = capsys.readouterr().out
    assert "dreambooth of stable-diffusion-v1-5/stable-diffusion-v1-5 at 512 px" in output
    assert "with prior preservation" in output
    plan, base, offload, gpu, host, checkpoint = rows(output)["T4 16 GB"]
    assert (plan, base, offload) == ("8-bit AdamW", "fp16", "no")
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
def test_a_flux_lora_is_planned_on_every_common_gpu_from_published_configs(tmp_path, capsys, no_download,
                                                                           monkeypatch):
    """Without bitsandbytes (no quantised base): the small cards cannot hold the bf16 transformer."""
    from dreambooth_core.training.memory import plan as memory_plan

    monkeypatch.setattr(memory_plan, "eight_bit_problem", lambda: "bitsandbytes left out for this test")
    assert main(["plan", "--session", "p", "--storage", str(tmp_path),
                 "--model", "black-forest-labs/FLUX.1-dev", "--method", "lora", "--class-word", "man", "--mixed-precision", "bf16"]) == 0
    output = capsys.readouterr().out
    assert "lora of black-forest-labs/FLUX.1-dev at 1024 px" in output and "text encoder frozen" in output
    found = rows(output)
    assert list(found) == GPUS
    assert found["RTX 3060 12 GB"][0] == "does not fit"  # the bf16 transformer alone is 22 GiB
    assert found["T4 16 GB"][0] == "cannot run: --mixed-precision bf16 needs a GPU with bfloat16 (compute " \
                                   "capability 8.0 or newer: A100, L4, RTX 30xx or later)"
    plan, base, offload, gpu, host, checkpoint = found["H100 80 GB"]
    assert (plan, base) == ("gradient checkpointing", "bf16")  # 1024 px activations: ~50 GiB without
    peak, usable = map(float, re.match(r"([\d.]+) GiB \(([\d.]+)\)", gpu).groups())
    assert 22 < peak <= usable  # the transformer held in bf16 (T5-XXL is off the GPU), and the step
    assert float(checkpoint.split()[0]) < 1  # LoRA weights and their AdamW moments
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # estimates tiny-flux's plans (seconds each)
def test_a_card_too_small_for_the_frozen_base_gets_it_quantised(tmp_path):
    from dreambooth_core.config import RuntimeSettings, TrainingSettings
    from dreambooth_core.families.base_model import fetch_model
    from dreambooth_core.training.memory.gpu_plans import (HOST_BASELINE_BYTES, Gpu, plan_table,
                                                           plans_on_common_gpus)
    from dreambooth_core.training.memory.estimate import estimate_training_memory
    from dreambooth_core.training.memory.plan import GIB, RESERVE_BYTES, USABLE_FRACTION, candidates

    path = fetch_model("tiny-flux", tmp_path).path
    training, runtime = TrainingSettings(steps=4, method="lora", mixed_precision="bf16"), RuntimeSettings()
    nf4 = next(p for p in candidates(training, runtime, True) if p.describe() == "gradient checkpointing + nf4 base")
    quantised, checkpointed = nf4.apply(training, runtime)
    peak = estimate_training_memory(path, quantised, 64, checkpointed, prior=True).peak_bytes
    card = Gpu("tiny card", (peak + RESERVE_BYTES) / USABLE_FRACTION / GIB + 1e-6, "bf16", (8, 6))
    [row] = plans_on_common_gpus(path, training, runtime, 64, True, True, gpus=(card,))
    assert row.plan.base_precision in ("int8", "nf4") and row.plan.estimated_peak_bytes <= row.plan.budget_bytes
    line = plan_table([row])[-1]
    assert f"| tiny card | {row.plan.describe()} | {row.plan.base_precision} | no |" in line
    # the quantised layers never sit whole on the host: less than the model held in bf16 there
    held = estimate_training_memory(path, training, 64, runtime, prior=True).model_bytes
    assert row.host_bytes < HOST_BASELINE_BYTES + held


@pytest.mark.parametrize("model, family", [("black-forest-labs/FLUX.1-dev", "FLUX.1"),
                                           ("black-forest-labs/FLUX.2-klein-base-4B", "FLUX.2 [klein]")])
def test_textual_inversion_of_flux_is_refused_in_one_line(model, family, tmp_path, capsys, no_download):
    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", model,
                 "--method", "textual-inversion"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: --method textual-inversion cannot train {family}:")
    assert err.count("\n") == 1 and "Traceback" not in err and "--method lora" in err
    assert out == ""  # refused before anything is estimated


def test_the_cost_of_n_gpus_and_of_the_run_at_a_measured_speed():
    """Only GPUs the settings fit, and a cloud sells, are priced."""
    from dreambooth_core.config import MemoryPlan
    from dreambooth_core.training.memory.gpu_plans import COMMON_GPUS, GpuPlan, cost_lines

    gpu = {g.name: g for g in COMMON_GPUS}
    fits = MemoryPlan(optimizer="adamw", gradient_checkpointing=False)
    rows = [GpuPlan(gpu["RTX 3060 12 GB"], fits, None), GpuPlan(gpu["L4 24 GB"], None, None, "too big"),
            GpuPlan(gpu["A100 40 GB"], fits, None), GpuPlan(gpu["H100 80 GB"], fits, None)]
    prices, hint = cost_lines(rows, 4, 2000, None)
    assert prices.startswith("Cost of 4 GPUs (Google Cloud on-demand, us-central1")
    assert prices.endswith(": A100 40 GB $14.68/h, H100 80 GB $44.12/h.")  # 4 x 3.67, 4 x 11.03
    assert "--steps-per-second" in hint
    _, run = cost_lines(rows, 4, 2000, 0.5)
    assert run == "At 0.5 steps/s, 2000 steps take 1.11 h: A100 40 GB $16.31, H100 80 GB $49.02."
    assert cost_lines(rows[:2], 4, 2000, 0.5) == []  # a consumer card, and a card the run does not fit


@pytest.mark.slow  # the CLI estimates two plans, each in a spawned process (about 25 s)
def test_plan_with_shard_prints_the_peak_of_each_of_the_gpus(tmp_path, capsys):
    from dreambooth_core.config import TrainingSettings
    from dreambooth_core.families.base_model import fetch_model
    from dreambooth_core.training.memory.estimate import estimate_training_memory

    assert main(["plan", "--session", "p", "--storage", str(tmp_path), "--model", "tiny", "--method", "dreambooth",
                 "--text-encoder-steps", "0", "--gpus", "2", "--shard", "--mixed-precision", "bf16"]) == 0
    output = capsys.readouterr().out
    assert "| GPU peak, each of 2 (usable) | host needs per machine (with copy) |" in output
    assert "--shard: the GPU peak is per GPU, what each of the 2 GPUs holds" in output
    assert "Cost of 2 GPUs" in output
    assert "left out: bitsandbytes" not in output  # --shard takes neither 8-bit AdamW nor a quantised base
    settings = TrainingSettings(steps=10, method="dreambooth", text_encoder_steps=0, gpus=2, shard=True,
                                mixed_precision="bf16")
    each = estimate_training_memory(fetch_model("tiny", tmp_path / "cache").path, settings, 64)
    peak, _ = rows(output)["H100 80 GB"][3].split(" GiB")
    assert float(peak) == round(each.peak_bytes / 2**30, 1)


def test_with_shard_the_host_holds_each_process_of_a_machine_and_no_commit_copy():
    from dreambooth_core.config import MemoryPlan
    from dreambooth_core.training.memory.estimate import MemoryEstimate
    from dreambooth_core.training.memory.gpu_plans import COMMON_GPUS, GpuPlan, host_peak_bytes, plan_table

    estimate = MemoryEstimate(peak_bytes=2**30, between_steps=0, seconds=0, checkpoint_bytes=2**35,
                              model_bytes=2**34)
    plan = MemoryPlan(optimizer="adamw", gradient_checkpointing=False, estimated_peak_bytes=2**30, budget_bytes=2**31)
    one, four = (GpuPlan(COMMON_GPUS[-1], plan, estimate, sharded_processes=n) for n in (0, 4))
    assert one.host_bytes_with_copy > one.host_bytes == host_peak_bytes(estimate, copy=False)
    assert four.host_bytes == four.host_bytes_with_copy == 4 * one.host_bytes
    assert "GPU peak (usable) | host needs (with copy)" in plan_table([one])[0]  # as without --shard
    assert "GPU peak, each of 8 (usable) | host needs per machine (with copy)" in plan_table([four], 8)[0]
