"""How much of the project a student passes through: the project files (and their lines) that one single-process
`python run.py --mode lora` smoke run imports, counted from `sys.modules` after running `run.main` in-process.

    python bench/reading_measure.py            # prints files in import order, then the totals
    python bench/reading_measure.py --list     # the files alone on stdout, one per line (tests/test_layout.py)

The smoke run: the repository's own flan-t5-small (config and tokenizer, `--random-init`) and DialogSum, two steps
on the CPU, with every other flag at its default. Every non-empty file under the repository counts, run.py
included; empty `__init__.py` files (package markers with no line to read) are not counted, as in issue 12's own
count.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def smoke_command(output_dir: str) -> list[str]:
    return ["--mode", "lora", "--model", str(ROOT / "models/flan-t5-small"), "--random-init",
            "--data", str(ROOT / "data/dialogsum"), "--max-train-samples", "16", "--max-steps", "2",
            "--max-eval-samples", "2", "--max-val-samples", "2", "--max-new-tokens", "4", "--batch-size", "4",
            "--device", "cpu", "--output-dir", output_dir, "--overwrite"]


def project_files() -> list[Path]:
    """The repository's non-empty files among the loaded modules, in the order they were first imported."""
    files = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not Path(path).is_absolute():  # some extension modules name a bare file
            continue
        path = Path(path).resolve()
        if path.is_relative_to(ROOT) and path.is_file() and path not in files and path != Path(__file__).resolve():
            files.append(path)
    return [f for f in files if f.read_text().strip()]  # an empty __init__.py has nothing to read


def loaded_by_a_lora_run() -> list[Path]:
    """Run the smoke run in this process; the project files it loaded."""
    import run

    with tempfile.TemporaryDirectory() as out:
        code = run.main(smoke_command(out))
    if code != 0:
        raise SystemExit(f"the smoke run failed with exit code {code}")
    return project_files()


def main() -> None:
    if "--list" in sys.argv[1:]:
        with contextlib.redirect_stdout(sys.stderr):  # the run's own lines: stdout holds the list alone
            files = loaded_by_a_lora_run()
        print("\n".join(str(f.relative_to(ROOT)) for f in files))
        return
    files = loaded_by_a_lora_run()
    total = 0
    for f in files:
        lines = len(f.read_text().splitlines())
        total += lines
        print(f"{lines:5d}  {f.relative_to(ROOT)}")
    print(f"{len(files)} files, {total:,} lines (empty __init__.py files not counted)")


if __name__ == "__main__":
    main()
