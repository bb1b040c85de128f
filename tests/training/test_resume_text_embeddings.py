"""A killed run resumes to the uninterrupted weights whether its stored text embeddings are kept
(read back, not encoded again) or deleted (encoded again, to the same bits): a real `dreambooth
train` SIGKILLed in its second chunk, on SD 1.x and on a flow family."""

import shutil
from pathlib import Path

import pytest
import torch
from test_resume_methods import final_tensors, train

pytestmark = pytest.mark.slow  # CLI runs: the full suite only

CASES = {
    # The text encoder never trains: every caption and class prompt is encoded at the setup.
    "lora, frozen text encoder, prior": ["--method", "lora", "--class-word", "man", "--class-images", "2",
                                         "--learning-rate", "1e-3"],
    # CLIP-L trains until step 2; the embeddings stored then are its trained ones (and T5's).
    "FLUX.1 dreambooth, CLIP-L phase ends at step 2": ["--model", "tiny-flux", "--text-encoder-steps", "2",
                                                       "--learning-rate", "1e-4"],
}


def embedding_files(session: Path) -> dict[str, int]:
    """Each stored embedding's name, with the time it was written."""
    return {p.name: p.stat().st_mtime_ns for p in (session / "text_embeddings").glob("*.safetensors")}


@pytest.mark.parametrize("case", CASES)
def test_a_killed_run_resumes_exactly_with_its_embeddings_kept_or_deleted(prefect_api_url, tmp_path, case):
    whole, kept, deleted = tmp_path / "whole", tmp_path / "kept", tmp_path / "deleted"
    done = train(prefect_api_url, whole, CASES[case])
    assert done.returncode == 0, done.stderr[-3000:]
    first = train(prefect_api_url, kept, CASES[case], kill_at="step:6")  # chunk 1 committed at 4
    assert first.returncode == -9, first.stderr[-3000:]
    stored = embedding_files(kept / "sessions" / "s")
    assert stored, "the killed run kept no text embeddings in its session"
    shutil.copytree(kept, deleted)
    shutil.rmtree(deleted / "sessions" / "s" / "text_embeddings")

    expected = final_tensors(whole / "sessions" / "s")
    for root in (kept, deleted):
        second = train(prefect_api_url, root, CASES[case])
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Resuming from committed checkpoint at step 4" in second.stderr
        actual = final_tensors(root / "sessions" / "s")
        assert expected.keys() == actual.keys()
        different = [k for k in expected if not torch.equal(expected[k], actual[k])]
        assert not different, f"{root.name}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert embedding_files(kept / "sessions" / "s") == stored  # read back, never written again
    assert embedding_files(deleted / "sessions" / "s").keys() == stored.keys()  # encoded again, same keys
