"""How much of the project a student passes through: the project files (and their lines) that one single-process
`python run.py --mode lora` smoke run imports, counted from `sys.modules` after running `run.main` in-process.

    python bench/reading_measure.py            # prints files in import order, then the totals

Every file under the repository counts, run.py and empty `__init__.py` files included.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def smoke_command(output_dir: str) -> list[str]:
    return ["--mode", "lora", "--model", str(SHARED / "models/flan-t5-small"), "--random-init",
            "--data", str(SHARED / "data/dialogsum"), "--max-train-samples", "16", "--max-steps", "2",
            "--max-eval-samples", "2", "--max-val-samples", "2", "--max-new-tokens", "4", "--batch-size", "4",
            "--output-dir", output_dir, "--overwrite"]


def project_files() -> list[Path]:
    """The repository's files among the loaded modules, in the order they were first imported."""
    files = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not Path(path).is_absolute():  # some extension modules name a bare file
            continue
        path = Path(path).resolve()
        if path.is_relative_to(ROOT) and path.is_file() and path not in files:
            files.append(path)
    return files


def main() -> None:
    import run

    with tempfile.TemporaryDirectory() as out:
        code = run.main(smoke_command(out))
    if code != 0:
        raise SystemExit(f"the smoke run failed with exit code {code}")
    files = project_files()
    files = [f for f in files if f != Path(__file__).resolve()]  # this script is not part of the run
    total = 0
    for f in files:
        lines = len(f.read_text().splitlines())
        total += lines
        print(f"{lines:5d}  {f.relative_to(ROOT)}")
    print(f"{len(files)} files, {total:,} lines")


if __name__ == "__main__":
    main()
