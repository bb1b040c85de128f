"""--memory auto: the fastest plan whose estimated peak fits, chosen once and recorded in the session."""

import pytest

from dreambooth_core.config import DreamBoothConfig, MemoryPlan, RuntimeSettings, TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.memory.estimate import estimate_training_memory
from dreambooth_core.training.memory.plan import (
    RESERVE_BYTES,
    USABLE_FRACTION,
    GpuMemory,
    candidates,
    check_fits,
    choose_plan,
    settle_memory_plan,
)

SETTINGS, RUNTIME = TrainingSettings(steps=4, text_encoder_steps=1), RuntimeSettings()


@pytest.fixture(scope="module")
def estimates(tmp_path_factory):
    """Peak bytes of each candidate plan on the tiny model, and the estimator that gave them."""
    tiny = fetch_model("tiny", tmp_path_factory.mktemp("cache")).path

    known: dict[str, int] = {}

    def estimate(training, runtime) -> int:  # each plan's estimate once: seconds each on this CPU
        key = training.model_dump_json() + runtime.model_dump_json()
        if key not in known:
            known[key] = estimate_training_memory(tiny, training, 64, runtime, prior=True).peak_bytes
        return known[key]

    peaks = {plan.describe(): estimate(*plan.apply(SETTINGS, RUNTIME)) for plan in candidates(SETTINGS, RUNTIME, True)}
    return estimate, peaks


def test_concessions_are_tried_fastest_first_and_only_when_not_made_already():
    first = ["no concessions", "8-bit AdamW", "gradient checkpointing", "8-bit AdamW + gradient checkpointing"]
    in_backward = ["optimizer step in backward", "8-bit AdamW + optimizer step in backward",
                   "gradient checkpointing + optimizer step in backward",
                   "8-bit AdamW + gradient checkpointing + optimizer step in backward"]
    offloaded = [f"{name} + offload" for name in in_backward]  # offload steps each block in backward
    # full DreamBooth: its denoiser trains, so no quantised base; offload last
    assert [p.describe() for p in candidates(SETTINGS, RUNTIME, eight_bit=True)] == first + in_backward + offloaded
    assert [p.describe() for p in candidates(SETTINGS, RUNTIME, eight_bit=False)] == \
        ["no concessions", "gradient checkpointing", in_backward[0], in_backward[2], offloaded[0], offloaded[2]]
    checkpointed = RuntimeSettings(gradient_checkpointing=True)
    assert [p.describe() for p in candidates(SETTINGS, checkpointed, eight_bit=True)][:4] == \
        ["gradient checkpointing", "8-bit AdamW + gradient checkpointing", *in_backward[2:]]
    # where the step in backward cannot train (fp16 loss scaling, accumulation), neither it nor
    # the offload that needs it is tried
    for cannot in (dict(mixed_precision="fp16"), dict(gradient_accumulation=2)):
        assert [p.describe() for p in candidates(SETTINGS.model_copy(update=cannot), RUNTIME, True)] == first
    # several GPUs: no offload (DDP keeps every trained weight on its GPU)
    assert not any(p.offload for p in candidates(SETTINGS.model_copy(update={"gpus": 2}), RUNTIME, True))


def test_a_frozen_denoiser_may_be_quantised_int8_then_nf4_after_the_exact_concessions():
    lora = SETTINGS.model_copy(update={"method": "lora", "text_encoder_steps": 0})
    named = [p.describe() for p in candidates(lora, RUNTIME, eight_bit=True)]
    quantised = [f"{name} + {base} base".removeprefix("no concessions + ") for base in ("int8", "nf4")
                 for name in ("no concessions", "8-bit AdamW", "gradient checkpointing",
                              "8-bit AdamW + gradient checkpointing")]
    assert named[:12] == ["no concessions", "8-bit AdamW", "gradient checkpointing",
                          "8-bit AdamW + gradient checkpointing", *quantised]
    assert "offload" not in " ".join(named)  # block swap is for full fine-tunes
    assert all(p.base_precision == "nf4" for p in candidates(lora, RUNTIME, True)[8:12])
    # textual inversion too; not where the user chose a base precision, nor without bitsandbytes
    ti = SETTINGS.model_copy(update={"method": "textual-inversion"})
    assert {p.base_precision for p in candidates(ti, RUNTIME, True)} == {"auto", "int8", "nf4"}
    for given, eight_bit in (("bf16", True), ("auto", False)):
        chosen = lora.model_copy(update={"base_precision": given})
        assert {p.base_precision for p in candidates(chosen, RUNTIME, eight_bit)} == {given}


def test_a_plan_carries_its_base_precision_and_offload_into_the_settings():
    plan = MemoryPlan(optimizer="adamw", gradient_checkpointing=True, base_precision="nf4", offload=True)
    training, runtime = plan.apply(SETTINGS, RUNTIME)
    assert (training.base_precision, runtime.offload, runtime.gradient_checkpointing) == ("nf4", True, True)
    assert plan.describe() == "gradient checkpointing + nf4 base + offload"


def test_a_plan_recorded_before_base_precision_and_offload_loads_as_auto_and_off(tmp_path):
    """session.json written before [lowvram]: its plan has neither field, and resumes as it trained."""
    import json

    from dreambooth_core.session.folder import Session
    from dreambooth_core.session.paths import SESSION_FILE
    from dreambooth_core.session.state import SessionState, load_state, save_state

    session = Session(str(tmp_path), "old")
    recorded = MemoryPlan(optimizer="adamw-8bit", gradient_checkpointing=True, estimated_peak_bytes=5, budget_bytes=9)
    save_state(session, SessionState(config=DreamBoothConfig(session="old"), memory_plan=recorded))
    path = tmp_path / "old" / SESSION_FILE
    written = json.loads(path.read_text())
    for name in ("base_precision", "offload"):
        written["memory_plan"].pop(name)
    path.write_text(json.dumps(written))
    plan = load_state(session).memory_plan
    assert (plan.base_precision, plan.offload, plan.optimizer) == ("auto", False, "adamw-8bit")
    training, runtime = plan.apply(SETTINGS, RUNTIME)
    assert training.base_precision == "auto" and not runtime.offload and training.optimizer == "adamw-8bit"


@pytest.mark.slow  # estimates every plan on the tiny model (seconds each)
def test_each_concession_lowers_the_estimated_peak(estimates):
    _, peaks = estimates
    assert peaks["no concessions"] > peaks["8-bit AdamW"] > peaks["8-bit AdamW + gradient checkpointing"]
    assert peaks["no concessions"] > peaks["gradient checkpointing"] > peaks["8-bit AdamW + gradient checkpointing"]
    assert peaks["8-bit AdamW + gradient checkpointing"] > \
        peaks["8-bit AdamW + gradient checkpointing + optimizer step in backward"]
    assert peaks["no concessions"] > peaks["optimizer step in backward"]


@pytest.mark.slow  # estimates every plan on the tiny model (seconds each)
def test_the_first_plan_within_the_budget_is_chosen_with_its_estimate(estimates):
    estimate, peaks = estimates
    chosen = set()
    for budget in peaks.values():
        plan = choose_plan(estimate, SETTINGS, RUNTIME, budget, eight_bit=True)
        expected = next(name for name, peak in peaks.items() if peak <= budget)  # candidates' order
        assert plan.describe() == expected
        assert plan.estimated_peak_bytes == peaks[expected] <= plan.budget_bytes == budget
        chosen.add(expected)
    # on the tiny model each plan without the step in backward or offload is the answer for some GPU,
    # and the plan of the least peak for the smallest
    assert {*list(peaks)[:4], min(peaks, key=peaks.get)} <= chosen


@pytest.mark.slow  # estimates every plan on the tiny model (seconds each)
def test_the_generous_budget_changes_nothing_and_without_bitsandbytes_checkpointing_comes_next(estimates):
    estimate, peaks = estimates
    assert choose_plan(estimate, SETTINGS, RUNTIME, 2**40, True).describe() == "no concessions"
    budget = peaks["gradient checkpointing"]
    assert choose_plan(estimate, SETTINGS, RUNTIME, budget, eight_bit=False).describe() == "gradient checkpointing"


@pytest.mark.slow  # estimates every plan on the tiny model (seconds each)
def test_when_nothing_fits_the_error_gives_every_estimate_and_what_to_try(estimates):
    estimate, peaks = estimates
    with pytest.raises(ConfigError) as error:
        choose_plan(estimate, SETTINGS, RUNTIME, min(peaks.values()) - 1, eight_bit=True)
    message = str(error.value)
    assert all(name in message for name in peaks)
    assert "--method lora" in message and "--text-encoder-steps 0" in message and "--memory none" in message


def test_a_recorded_plan_that_does_not_fit_this_gpu_is_refused_with_what_to_do():
    plan = MemoryPlan(optimizer="adamw-8bit", gradient_checkpointing=True, estimated_peak_bytes=12 * 2**30)
    check_fits(plan, plan.estimated_peak_bytes, 14 * 2**30, "s")
    with pytest.raises(ConfigError, match=r"'s' trains with 8-bit AdamW \+ gradient checkpointing.*12.0 GiB.*"
                                          r"10.0 GiB usable.*new --session"):
        check_fits(plan, plan.estimated_peak_bytes, 10 * 2**30, "s")


def settle(estimates_fixture, recorded=None, started=False, free=2**40, memory="auto"):
    config = DreamBoothConfig(session="s", training=SETTINGS, runtime=RuntimeSettings(memory=memory))
    gpu = GpuMemory(free_bytes=free, precision="no") if free is not None else None
    return settle_memory_plan(config, recorded, started, estimates_fixture, 64, True, gpu)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    return fetch_model("tiny", tmp_path_factory.mktemp("cache")).path


@pytest.mark.slow  # estimates every plan on the tiny model (seconds each)
def test_a_new_session_on_a_gpu_gets_a_plan_chosen_for_its_free_memory(tiny_path, estimates):
    _, peaks = estimates
    roomy = settle(tiny_path)
    assert roomy.describe() == "no concessions" and roomy.estimated_peak_bytes == peaks["no concessions"]
    # free memory whose usable part holds only the checkpointed plan (no bitsandbytes here)
    free = int((peaks["gradient checkpointing"] + RESERVE_BYTES) / USABLE_FRACTION) + 1
    tight = settle(tiny_path, free=free)
    assert tight.gradient_checkpointing and tight.estimated_peak_bytes <= tight.budget_bytes


def test_a_recorded_plan_is_kept_on_the_cpu_and_checked_on_a_gpu(tiny_path):
    recorded = MemoryPlan(optimizer="adamw", gradient_checkpointing=True, estimated_peak_bytes=10 * 2**20)
    assert settle(tiny_path, recorded, started=True, free=None) == recorded
    assert settle(tiny_path, recorded, started=True) == recorded
    with pytest.raises(ConfigError, match="has .* GiB usable"):
        settle(tiny_path, recorded, started=True, free=2**29)  # 0.5 GiB free: less than nothing usable


def test_memory_none_and_sessions_older_than_plans_train_as_given(tiny_path):
    assert settle(tiny_path, memory="none") is None
    assert settle(tiny_path, started=True) is None
    assert settle(tiny_path, free=None) == MemoryPlan(optimizer="adamw", gradient_checkpointing=False)


def test_the_docker_image_installs_the_library_every_concession_needs():
    """--memory auto on the image may choose 8-bit AdamW: the image installs bitsandbytes (the [gpu] extra)."""
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith("bitsandbytes") for requirement in extras["gpu"])
    installs = [line for line in (repo / "Dockerfile").read_text().splitlines() if "pip install" in line]
    assert any('".[gpu]"' in line and "import" in line and "bitsandbytes" in line for line in installs), installs


def test_with_shard_the_plan_leaves_8_bit_adamw_out_and_may_checkpoint_activations():
    """8-bit AdamW does not take sharded weights; the step in backward and offload need one process."""
    sharded = TrainingSettings(steps=4, text_encoder_steps=0, gpus=4, shard=True, mixed_precision="bf16")
    assert [p.describe() for p in candidates(sharded, RUNTIME, True)] == ["no concessions",
                                                                          "gradient checkpointing"]
