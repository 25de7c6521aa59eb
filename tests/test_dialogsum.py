"""DialogSum loading: both sources give the same examples; bad files fail with the file and line."""
import csv
import json

import pytest
from datasets import Dataset

from prompting.dialogsum import Example, load_split, open_text, split_file
from prompting.hub_layout import group_references
from tests.conftest import DATA_DIR


@pytest.fixture(scope="module")
def official():
    return {split: load_split(str(DATA_DIR), split) for split in ("train", "validation", "test")}


def hub_rows(split_examples):
    """The hub's layout: one row per reference, ids `test_0_1..3` for the test split, like knkarthick/dialogsum."""
    rows = []
    for ex in split_examples:
        for k, ref in enumerate(ex.references, start=1):
            row_id = f"{ex.id}_{k}" if len(ex.references) > 1 else ex.id
            rows.append({"id": row_id, "dialogue": ex.dialogue, "summary": ref, "topic": ex.topic})
    return rows


def test_official_folder_has_the_published_split_sizes(official):
    assert [len(official[s]) for s in ("train", "validation", "test")] == [12_460, 500, 500]
    assert all(len(ex.references) == 3 for ex in official["test"])
    assert all(len(ex.references) == 1 for ex in official["train"] + official["validation"])
    assert official["test"][0].id == "test_0" and official["validation"][0].id == "dev_0"
    assert len({ex.id for split in official.values() for ex in split}) == 13_460


def test_official_test_keeps_its_three_references_in_order(official):
    with open_text(split_file(DATA_DIR, "test")) as f:  # as shipped: dialogsum.test.jsonl.gz
        first = json.loads(f.readline())
    assert official["test"][0].references == (first["summary1"].strip(), first["summary2"].strip(),
                                             first["summary3"].strip())
    assert official["test"][0].topic == first["topic1"].strip()


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_hub_layout_saved_locally_loads_to_the_same_examples(official, tmp_path, suffix):
    for split in ("validation", "test"):
        rows = hub_rows(official[split])
        assert len(rows) == {"validation": 500, "test": 1500}[split]
        path = tmp_path / f"{split}.{suffix}"
        if suffix == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["id", "dialogue", "summary", "topic"])
                writer.writeheader()
                writer.writerows(rows)
        assert load_split(str(tmp_path), split) == official[split]


def test_hub_layout_train_split_loads_to_the_same_examples(official, tmp_path):
    with open(tmp_path / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "dialogue", "summary", "topic"])
        writer.writeheader()
        writer.writerows(hub_rows(official["train"]))
    assert load_split(str(tmp_path), "train") == official["train"]


def test_grouping_folds_a_hub_dataset_back_into_three_reference_examples(official):
    dataset = Dataset.from_list(hub_rows(official["test"][:30]))  # 90 rows, as load_dataset would return them
    assert len(dataset) == 90
    grouped = group_references((f"row {i}", row) for i, row in enumerate(dataset))
    assert grouped == official["test"][:30]


def test_hub_id_goes_through_load_dataset_and_grouping(official, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):  # the hub cannot be reached from here: stand in for it
        calls.append((name, split))
        return Dataset.from_list(hub_rows(official[split][:12]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_split("knkarthick/dialogsum", "test", max_samples=5) == official["test"][:5]
    assert calls == [("knkarthick/dialogsum", "test")]


def test_hub_id_while_offline_says_so_and_names_the_local_alternative():
    with pytest.raises(ValueError, match=r"cannot reach the Hugging Face hub for 'knkarthick/dialogsum'.*--data"):
        load_split("knkarthick/dialogsum", "test")


def test_subsets_are_deterministic(official):
    a = load_split(str(DATA_DIR), "train", max_samples=64, seed=1)
    assert a == load_split(str(DATA_DIR), "train", max_samples=64, seed=1)
    assert a != load_split(str(DATA_DIR), "train", max_samples=64, seed=2)
    assert a != official["train"][:64]  # a shuffle, not the head of the file
    assert set(a) <= set(load_split(str(DATA_DIR), "train", max_samples=128, seed=1))  # nested
    assert load_split(str(DATA_DIR), "test", max_samples=7, seed=3) == official["test"][:7]  # eval: first N
    assert load_split(str(DATA_DIR), "test", max_samples=10_000) == official["test"]


def write_lines(folder, name, lines):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder


GOOD = json.dumps({"fname": "train_0", "dialogue": "#Person1#: Hi.", "summary": "They greet.", "topic": "hi"})


@pytest.mark.parametrize("bad_line, message", [
    ('{"fname": "train_1", "dialogue": ', r"dialogsum\.train\.jsonl:2: not a valid JSON line"),
    (json.dumps({"fname": "train_1", "summary": "x"}), r"dialogsum\.train\.jsonl:2: the row has no dialogue"),
    (json.dumps({"fname": "train_1", "dialogue": "d", "summary": " "}), r"dialogsum\.train\.jsonl:2: the row has no summary"),
    ("[1, 2]", r"dialogsum\.train\.jsonl:2: expected a JSON object"),
])
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path, bad_line, message):
    folder = write_lines(tmp_path / "data", "dialogsum.train.jsonl", [GOOD, bad_line])
    with pytest.raises(ValueError, match=message):
        load_split(str(folder), "train")


def test_bad_csv_rows_name_the_file_and_the_line_the_row_starts_on(tmp_path):
    header, good = "id,dialogue,summary,topic", '"train_0","#Person1#: Hi.\n#Person2#: Hello.",They greet.,hi'
    folder = write_lines(tmp_path / "a", "train.csv", [header, good, "train_1,only two"])
    with pytest.raises(ValueError, match=r"train\.csv:4: expected 4 fields"):  # the good row spans lines 2-3
        load_split(str(folder), "train")
    folder = write_lines(tmp_path / "b", "train.csv", [header, good, "train_1,,a summary,t"])
    with pytest.raises(ValueError, match=r"train\.csv:4: the row has no dialogue"):
        load_split(str(folder), "train")


def test_missing_folder_or_file_names_it_and_the_files_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*dialogsum\.test\.jsonl.*test\.jsonl / test\.csv"):
        load_split(str(tmp_path / "nowhere"), "test")
    folder = write_lines(tmp_path / "d", "dialogsum.train.jsonl", [GOOD])
    with pytest.raises(FileNotFoundError, match=r"no file for split 'validation': expected dialogsum\.dev\.jsonl"):
        load_split(str(folder), "validation")
    assert load_split(str(folder), "train") == [Example("train_0", "#Person1#: Hi.", ("They greet.",), "hi")]


def test_unknown_split_and_impossible_sample_counts_are_refused():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_split(str(DATA_DIR), "dev")
    with pytest.raises(ValueError, match="max_samples must be a positive"):
        load_split(str(DATA_DIR), "test", max_samples=0)
