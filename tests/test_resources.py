"""tests/resources.py: the data and model files come from the repository, then SHARED_DIR, then shared/ beside the
repository, then the hub (faked here: no test reaches the network); with none of them, one message says what to set."""
import csv
import json

import pytest

from prompting.dialogsum import load_split
from tests import resources


def model_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name in resources.MODEL_FILES:
        (folder / name).write_text("{}")
    return folder


def data_folder(folder, marker="local"):
    folder.mkdir(parents=True, exist_ok=True)
    for name in resources.DATA_FILES:
        (folder / name).write_text(json.dumps({"fname": marker}) + "\n")
    return folder


def shared(root, data=True, models=True):
    if data:
        data_folder(root / "data" / "dialogsum")
    if models:
        model_folder(root / "models" / "flan-t5-small")
        model_folder(root / "models" / "flan-t5-base")
    return root


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: writes what the hub would hold, records each call."""

    def __init__(self, root, fail=False):
        self.root, self.fail, self.calls = root, fail, []

    def __call__(self, repo_id, repo_type=None, allow_patterns=None):
        self.calls.append((repo_id, repo_type, tuple(allow_patterns)))
        if self.fail:
            raise OSError("Name or service not known")
        folder = self.root / repo_id.replace("/", "--")
        if repo_type == "dataset":  # the hub's layout: one row per reference, ids test_0_1..3
            folder.mkdir(parents=True, exist_ok=True)
            for split, count, refs in (("train", 3, 1), ("validation", 2, 1), ("test", 2, 3)):
                with open(folder / f"{split}.csv", "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["id", "dialogue", "summary", "topic"])
                    for i in range(count):
                        for k in range(1, refs + 1):
                            row_id = f"{split}_{i}_{k}" if refs > 1 else f"{split}_{i}"
                            writer.writerow([row_id, f"#Person1#: Hi {i}.", f"summary {k}", "greeting"])
            return str(folder)
        return str(model_folder(folder))


def test_shared_dir_comes_first_then_the_folder_beside_the_repository(tmp_path):
    repo = tmp_path / "work" / "repo"
    shared(tmp_path / "work" / "shared")
    mine = shared(tmp_path / "mine", models=False)  # SHARED_DIR with the data only
    hub = FakeHub(tmp_path / "hub")
    found = resources.find({"SHARED_DIR": str(mine)}, repo, download=hub, cache=tmp_path / "cache")
    assert found.data == mine / "data" / "dialogsum"
    assert found.small == tmp_path / "work" / "shared" / "models" / "flan-t5-small"  # each file set on its own
    found = resources.find({}, repo, download=hub, cache=tmp_path / "cache")
    assert found.data == tmp_path / "work" / "shared" / "data" / "dialogsum"
    assert hub.calls == []  # nothing downloaded while a local folder has it


def test_the_repository_comes_first_and_ships_all_three(tmp_path):
    repo = shared(tmp_path / "work" / "repo")
    shared(tmp_path / "work" / "shared")
    hub = FakeHub(tmp_path / "hub")
    found = resources.find({"SHARED_DIR": str(shared(tmp_path / "mine"))}, repo, download=hub)
    assert (found.data, found.small, found.base) == (repo / "data" / "dialogsum", repo / "models" / "flan-t5-small",
                                                     repo / "models" / "flan-t5-base")
    assert hub.calls == []
    real = resources.find({}, resources.REPO, download=FakeHub(tmp_path / "hub2", fail=True))  # this clone, offline
    assert real.data == resources.REPO / "data" / "dialogsum" and real.small.parent == resources.REPO / "models"
    assert len(load_split(str(real.data), "test")) == 500  # the gzipped files the repository ships


def test_the_hub_is_last_config_and_tokenizer_only_and_the_data_is_rewritten_once(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    found = resources.find({"SHARED_DIR": str(tmp_path / "nonexistent")}, tmp_path / "lonely" / "repo",
                           download=hub, cache=tmp_path / "cache")
    assert [c[0] for c in hub.calls] == ["knkarthick/dialogsum", "google/flan-t5-small", "google/flan-t5-base"]
    for _, repo_type, patterns in hub.calls:
        assert not any(p.endswith((".safetensors", ".bin")) or p == "*" for p in patterns)  # never the weights
    assert found.small == tmp_path / "hub" / "google--flan-t5-small"
    assert found.data == tmp_path / "cache" / "dialogsum"
    test = load_split(str(found.data), "test")  # the official layout: three rows folded into one example
    assert [ex.id for ex in test] == ["test_0", "test_1"] and test[0].references == ("summary 1", "summary 2",
                                                                                       "summary 3")
    assert len(load_split(str(found.data), "train")) == 3 and len(load_split(str(found.data), "validation")) == 2
    resources.find({}, tmp_path / "lonely" / "repo", download=hub, cache=tmp_path / "cache")
    assert [c[0] for c in hub.calls].count("knkarthick/dialogsum") == 1  # downloaded and rewritten once


def test_with_nothing_anywhere_one_message_says_what_to_set(tmp_path):
    hub = FakeHub(tmp_path / "hub", fail=True)
    with pytest.raises(resources.Missing) as caught:
        resources.find({"SHARED_DIR": "/nonexistent"}, tmp_path / "lonely" / "repo", download=hub,
                       cache=tmp_path / "cache")
    said = str(caught.value)
    assert "SHARED_DIR=/nonexistent: does not exist" in said
    assert f"{tmp_path / 'lonely' / 'shared'} (beside the repository): does not exist" in said
    assert "knkarthick/dialogsum: OSError: Name or service not known" in said and "google/flan-t5-base" in said
    assert "Set SHARED_DIR to a folder holding data/dialogsum" in said
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
