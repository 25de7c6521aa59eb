"""The layout the README promises, checked over the source with `ast` (no imports run), and against what one LoRA
run really loads:

* `lora/`, `eval/` and `model/` import nothing else of the project (`model/` is where training and prompting both
  find the model);
* no library package imports the runner layer (`modes/`) or run.py, and no two packages import each other;
* the command line is read where the configuration is built, and nowhere else: no library function takes or reads
  the argparse namespace, and in `modes/` only the builders (`config_from_args`, `lora_config`, ...) do;
* a single-process `--mode lora` run (bench/reading_measure.py's smoke run, in a subprocess) loads nothing of the
  several-process layer and, training on the CPU with the default --cpu-kernels, the CPU layer; the files it loads
  are exactly the numbered ones of docs/READING.md.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LIBRARY = ("lora", "eval", "model", "prompting", "train_loop", "pretrain")
PACKAGES = LIBRARY + ("modes",)
STANDALONE = ("lora", "eval", "model")
SEVERAL_PROCESSES = {"train_loop/distributed.py", "train_loop/dist_checkpoint.py", "train_loop/sharding.py"}
CPU_LAYER = "train_loop/cpu_speed.py"


def imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    """The project modules a file imports (`import a.b`, `from a.b import c`, `from a import b`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES or n == "run"}


def package_imports() -> dict[str, set[str]]:
    """package -> the other packages (or run.py) its files import, anywhere in the file."""
    edges = {}
    for package in PACKAGES:
        for path in (REPO / package).glob("*.py"):
            targets = {name.split(".")[0] for name in imported_modules(path)} - {package}
            edges.setdefault(package, set()).update(targets)
    return edges


def readers_of_args(source: str) -> list[str]:
    """The functions that take a parameter `args` or read `args.<flag>` ("<module>" for code outside functions)."""
    tree = ast.parse(source)
    readers = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            reads = any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args"
                        for n in ast.walk(node))
            if "args" in params or reads:
                readers.append(node.name)
    outside = [n for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.ClassDef))
               for n in ast.walk(statement) if isinstance(n, ast.Name) and n.id == "args"]
    return readers + (["<module>"] if outside else [])


def test_lora_eval_and_model_import_nothing_else_of_the_project():
    edges = package_imports()
    for package in STANDALONE:
        assert not edges[package], f"{package}/ imports {sorted(edges[package])}"


def test_no_library_package_imports_a_runner():
    edges = package_imports()
    for package in LIBRARY:
        assert not edges[package] & {"modes", "run"}, f"{package}/ imports {sorted(edges[package] & {'modes', 'run'})}"


def test_no_import_cycle_between_packages():
    edges = package_imports()

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False
    cycles = [package for package in PACKAGES if reaches(package, package, set())]
    assert not cycles, f"packages in an import cycle: {cycles} ({ {p: sorted(edges[p]) for p in cycles} })"


def test_only_the_configuration_builders_read_the_command_line():
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            readers = readers_of_args(path.read_text())
            allowed = [] if package in LIBRARY else [name for name in readers if "config" in name]
            assert readers == allowed, f"{path.relative_to(REPO)}: {sorted(set(readers) - set(allowed))} read args"


def test_the_rules_can_fail(tmp_path):
    """The checkers see what breaks a rule (a test that cannot fail proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from modes.train import run\nimport train_loop.distributed\n")
    assert imported_modules(bad, top_level_only=True) == {"modes.train", "modes.train.run", "train_loop.distributed"}
    source = "def build(args):\n    pass\n\ndef f(x):\n    return args.lr\n\ndef g(*args):\n    pass\n\nlr = args.lr\n"
    assert readers_of_args(source) == ["build", "f", "<module>"]


# ---- what one LoRA run loads -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded_by_a_lora_run() -> list[str]:
    """The project files bench/reading_measure.py's smoke run (2 steps of flan-t5-small, random init) loads."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / "reading_measure.py"), "--list"], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def reading_guide_files() -> list[str]:
    """The files of docs/READING.md's numbered rows (`| 3 | `prompting/dialogsum.py` | ...`), in reading order."""
    rows = re.findall(r"^\| *\d+ *\| *`([^`]+\.py)` *\|", (REPO / "docs" / "READING.md").read_text(), flags=re.M)
    assert rows, "docs/READING.md has no numbered rows"
    return rows


def test_a_single_process_lora_run_loads_no_several_process_layer_but_the_cpu_layer(loaded_by_a_lora_run):
    assert not SEVERAL_PROCESSES & set(loaded_by_a_lora_run), sorted(SEVERAL_PROCESSES & set(loaded_by_a_lora_run))
    assert CPU_LAYER in loaded_by_a_lora_run  # training on the CPU with --cpu-kernels, on by default


def test_the_reading_guide_numbers_exactly_the_files_a_lora_run_loads(loaded_by_a_lora_run):
    listed = reading_guide_files()
    assert len(listed) == len(set(listed)), "docs/READING.md numbers a file twice"
    assert set(listed) == set(loaded_by_a_lora_run), (f"loaded, not in the guide: "
                                                      f"{sorted(set(loaded_by_a_lora_run) - set(listed))}; "
                                                      f"in the guide, not loaded: {sorted(set(listed) - set(loaded_by_a_lora_run))}")
