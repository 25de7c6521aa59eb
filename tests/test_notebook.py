"""notebooks/reading_order.ipynb: it runs end to end on a CPU, every cell, in a real Jupyter kernel (nbclient and
ipykernel, as Jupyter and Colab run it); a cell that raises fails the run; it is stored without outputs; its setup
cell clones and installs only in Colab, and does nothing but find the repository's root inside a clone."""
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "reading_order.ipynb"
CELL_TIMEOUT_S = 600  # a hang guard, not a speed claim: the whole notebook takes about 25 s on one CPU thread


def execute(notebook, folder: Path):
    """Run every code cell in order in a fresh python3 kernel started in `folder`; raises CellExecutionError
    (naming the cell and its traceback) at the first cell that raises."""
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    return client.execute()


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    cells = code_cells(notebook)
    assert cells
    for number, cell in enumerate(cells, start=1):
        assert cell.outputs == [], f"code cell {number} is stored with outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {number} is stored with an execution count"


def test_the_notebook_runs_end_to_end_on_cpu():
    """Started from notebooks/, as Jupyter starts it: the setup cell moves to the repository's root."""
    notebook = execute(nbformat.read(NOTEBOOK, as_version=4), NOTEBOOK.parent)
    cells = code_cells(notebook)
    assert all(cell.execution_count for cell in cells), "a code cell did not run"
    errors = [out for cell in cells for out in cell.outputs if out.output_type == "error"]
    assert not errors
    printed = "".join(out.get("text", "") for cell in cells for out in cell.outputs if out.output_type == "stream")
    assert f"repository: {REPO}" in printed
    assert "frozen weights unchanged: True" in printed and "rouge_score" in printed


def test_a_cell_that_raises_fails_the_run(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                               nbformat.v4.new_code_cell("assert x == 2, 'x is not 2'"),
                                               nbformat.v4.new_code_cell("ran_after = True")])
    with pytest.raises(CellExecutionError, match="x is not 2"):
        execute(notebook, tmp_path)


# ---- the setup cell, run in this process with git and pip replaced by a recorder -------------------------------

def setup_cell() -> str:
    """The one code cell that names the repository's URL; it must be the first code cell."""
    cells = code_cells(nbformat.read(NOTEBOOK, as_version=4))
    with_url = [cell.source for cell in cells if "REPO_URL =" in cell.source]
    assert len(with_url) == 1, "the repository's URL must be set in exactly one cell"
    assert cells[0].source == with_url[0], "the setup cell must be the first code cell"
    return with_url[0]


@pytest.fixture
def recorded(monkeypatch):
    """subprocess.run recorded instead of run; `git clone URL FOLDER` makes an empty repository in FOLDER."""
    calls = []

    def run(command, check=False):
        calls.append(command)
        if command[:2] == ["git", "clone"]:
            (Path(command[-1]) / "lora").mkdir(parents=True)
            (Path(command[-1]) / "lora" / "layer.py").write_text("")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return calls


def test_in_colab_the_setup_cell_clones_and_installs_the_requirements(tmp_path, monkeypatch, recorded):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(setup_cell(), namespace)
    clone, install = recorded
    assert clone[:5] == ["git", "clone", "--depth", "1", namespace["REPO_URL"]]
    assert install == [sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt"]
    assert Path.cwd() == tmp_path / clone[-1] and str(Path.cwd()) in sys.path


def test_inside_the_repository_the_setup_cell_installs_nothing(monkeypatch, recorded):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))  # even in Colab
    monkeypatch.chdir(REPO / "notebooks")
    exec(setup_cell(), {})
    assert recorded == []
    assert Path.cwd() == REPO


def test_outside_colab_the_setup_cell_never_clones_or_installs(tmp_path, monkeypatch, recorded):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)  # not a clone either: still nothing is fetched or installed
    exec(setup_cell(), {})
    assert recorded == []
    assert Path.cwd() == tmp_path
