"""The model builder: FLAN-T5's architecture with an untied lm_head that survives save and reload."""
import torch
from transformers import T5ForConditionalGeneration

from model.load import build_random_init, check_model_folder, count_parameters, load_pretrained
from tests.conftest import BASE_DIR, SMALL_DIR


def test_flan_t5_small_has_its_published_parameter_count():
    model = build_random_init(SMALL_DIR)
    assert count_parameters(model) == (76_961_152, 76_961_152)
    assert model.lm_head.weight is not model.shared.weight
    assert model.encoder.embed_tokens.weight is model.shared.weight  # T5 really does tie these


def test_flan_t5_base_has_its_published_parameter_count():
    with torch.device("meta"):
        model = build_random_init(BASE_DIR)
    assert count_parameters(model)[1] == 247_577_856


def test_random_init_survives_save_and_reload_untied(tmp_path):
    model = build_random_init(SMALL_DIR).eval()
    model.save_pretrained(tmp_path)
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((SMALL_DIR / name).read_bytes())
    reloaded = load_pretrained(tmp_path).eval()
    assert isinstance(reloaded, T5ForConditionalGeneration)
    assert count_parameters(reloaded)[1] == 76_961_152
    assert reloaded.lm_head.weight is not reloaded.shared.weight
    ids = torch.randint(2, 1000, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, labels=ids).logits, reloaded(input_ids=ids, labels=ids).logits)


def test_model_folder_errors_name_what_is_missing(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_folder(tmp_path / "nope", need_weights=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        check_model_folder(tmp_path, need_weights=False)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        check_model_folder(tmp_path, need_weights=False)
    (tmp_path / "spiece.model").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="no weights"):
        check_model_folder(tmp_path, need_weights=True)
