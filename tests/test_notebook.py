"""Executes notebooks/quickstart.ipynb top to bottom (small settings, CPU) so it cannot rot.

The kernel is the interpreter running the tests (a kernelspec written to a temporary
``JUPYTER_PATH``), so a fresh CI virtual environment needs no ``ipykernel install`` and no other
kernel on the machine is picked up by mistake."""

import base64
import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
KERNEL = "gru-forecaster-test"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (tests)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # small settings: 15-50 s on two busy CPU cores
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("QUICKSTART_TRAIN_BATCHES", "8")
    monkeypatch.setenv("QUICKSTART_STREAM_STEPS", "24")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # outputs stay out of git: the committed notebook is clean
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "clear the notebook's outputs before committing it"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    pngs = [o["data"]["image/png"] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, "expected the forecast plot and two online-forecast plots"
    assert all(len(base64.b64decode(p)) > 10_000 for p in pngs)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
