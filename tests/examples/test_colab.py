"""examples/colab.ipynb runs top to bottom on the tiny model (the Colab-only cells, Drive and the
upload widget, are skipped outside Colab), and shows the samples and the evaluation inline."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_on_the_tiny_model(prefect_api_url, monkeypatch, tmp_path):
    for name, value in {"NOTEBOOK_MODEL": "tiny", "NOTEBOOK_STEPS": "2", "NOTEBOOK_CLASS_WORD": "",
                        "NOTEBOOK_RESOLUTION": "64",
                        # The least rendering that still shows samples and an evaluation.
                        "NOTEBOOK_EXTRA_FLAGS": "--sample-steps 2 --evaluation-prompts 1 --evaluation-images 1 "
                                                "--evaluation-inference-steps 2",
                        "NOTEBOOK_SESSION": "demo", "NOTEBOOK_STORAGE": str(tmp_path / "drive"),
                        "NOTEBOOK_PHOTOS": str(REPO / "examples" / "photos"),
                        "PYTHONPATH": str(REPO)}.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(REPO / "examples" / "colab.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "usable" in text and "Done: session 'demo' trained to step 2" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the sample grid, the loss curve, the evaluation plot
    assert "Recommended:" in "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert (tmp_path / "drive" / "demo" / "demo.safetensors").exists()
