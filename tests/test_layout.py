"""The layout the README promises, checked over the source with `ast` (no imports run):

* `lora/` and `eval/` import nothing else of the project;
* no library package (`lora/`, `eval/`, `prompting/`, `train_loop/`) imports the runner layer (`modes/`) or run.py;
* no import cycle between the packages;
* a single-process run never needs the scale or CPU-speed layers: the core of `train_loop/` imports
  `distributed`, `dist_checkpoint`, `sharding` and `cpu_speed` nowhere at module level.
"""
import ast
from pathlib import Path

from tests.conftest import REPO

LIBRARY = ("lora", "eval", "prompting", "train_loop")
PACKAGES = LIBRARY + ("modes",)
STANDALONE = ("lora", "eval")
LAYERS = {"train_loop.distributed", "train_loop.dist_checkpoint", "train_loop.sharding", "train_loop.cpu_speed"}


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


def test_lora_and_eval_import_nothing_else_of_the_project():
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


def test_the_single_process_core_loads_no_scale_or_cpu_layer():
    core = [p for p in (REPO / "train_loop").glob("*.py") if f"train_loop.{p.stem}" not in LAYERS]
    core += [REPO / "modes" / "train.py", REPO / "run.py"]
    for path in core:
        loaded = imported_modules(path, top_level_only=True) & LAYERS
        assert not loaded, f"{path.relative_to(REPO)} imports {sorted(loaded)} at module level"


def test_the_rules_can_fail(tmp_path):
    """The checker sees an import that breaks a rule (a test that cannot fail proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from modes.train import run\nimport train_loop.distributed\n")
    assert imported_modules(bad, top_level_only=True) == {"modes.train", "modes.train.run", "train_loop.distributed"}
