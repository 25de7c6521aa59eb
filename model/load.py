"""FLAN-T5 and its tokenizer, the model every mode starts from: `load_pretrained` (a hub id or a local folder), or
`build_random_init`, the architecture from a folder's `config.json` with random weights (tests, benchmarks).

The trap (docs/NOTES.md, "FLAN-T5 in transformers"): FLAN-T5's `lm_head` is *not* tied to the input embedding
`shared`, but transformers 5.x's `T5Config` forces `tie_word_embeddings=True`, so a model built from the config
alone ties them: 60,511,616 parameters (flan-t5-small) instead of 76,961,152. We keep T5's real ties (`shared` ==
`encoder.embed_tokens` == `decoder.embed_tokens`) and give the model its own, independently initialised `lm_head`
(a clone of `shared` would be re-tied by `from_pretrained` on reload). Hub ids go through model/hub.py.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

TOKENIZER_FILES = ("tokenizer.json", "spiece.model")  # either one is enough for AutoTokenizer

log = logging.getLogger(__name__)


def is_local(name: str | os.PathLike) -> bool:
    """The one rule for --model and --data: a hub id is `owner/name` (`google/flan-t5-base`, `knkarthick/dialogsum`);
    anything that exists on disk, is spelt like a path (`./x`, `/x`, `~/x`) or is not `owner/name` is a folder."""
    name = str(name)
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1


def load_model_and_tokenizer(name: str, random_init: bool = False, seed: int = 0):
    """The model and its tokenizer from a local folder or a hub id; offline hub errors become a clear ValueError."""
    try:
        if is_local(name):
            folder = check_model_folder(name, need_weights=not random_init)
        else:
            from model.hub import config_and_tokenizer

            folder = config_and_tokenizer(name) if random_init else name
        tokenizer = load_tokenizer(folder)
        model = build_random_init(folder, seed=seed) if random_init else load_pretrained(folder)
    except (OSError, ValueError) as err:
        if is_local(name) and isinstance(err, FileNotFoundError):
            raise
        if Path(name).exists():  # a local folder with a broken file (config.json that is not JSON, say)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"model folder {name} cannot be loaded: {first}") from err
        if isinstance(err, ValueError):
            raise
        from model.hub import hub_error

        raise hub_error(name) from err  # transformers: "We couldn't connect to 'https://huggingface.co' ..."
    if random_init:
        log.warning("--random-init: %s has random weights; its summaries are meaningless (fine for smoke runs "
                    "and speed measurements)", name)
    return model, tokenizer


def model_width(name: str) -> int:
    """d_model from the model's config.json, before any weight is read (the default learning rate depends on it)."""
    if not is_local(name):
        from model.hub import hub_config

        return hub_config(name).d_model
    path = check_model_folder(name, need_weights=False) / "config.json"
    try:
        return int(json.loads(path.read_text())["d_model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"model folder {name} cannot be loaded: {path} holds no d_model ({err})") from err


def check_model_folder(folder: str | os.PathLike, need_weights: bool) -> Path:
    """Raise a FileNotFoundError that names what is missing, before transformers raises a longer one."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist; pass a folder with config.json and tokenizer files")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model folder {path} has no config.json")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"model folder {path} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    if need_weights and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise FileNotFoundError(
            f"model folder {path} has no weights (*.safetensors or *.bin); use --random-init for the architecture alone"
        )
    return path


def load_tokenizer(name_or_folder: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_folder))


def load_pretrained(name_or_folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """The real path: pretrained FLAN-T5 from the hub or a local folder."""
    from transformers import AutoModelForSeq2SeqLM

    if is_local(name_or_folder):
        check_model_folder(name_or_folder, need_weights=True)
    return AutoModelForSeq2SeqLM.from_pretrained(str(name_or_folder), dtype=dtype)


def build_random_init(config_folder: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.float32):
    """FLAN-T5's architecture from `config_folder/config.json`, random weights, an untied `lm_head`: 76,961,152
    parameters for flan-t5-small, 247,577,856 for flan-t5-base, as the released checkpoints."""
    from transformers import T5Config

    folder = Path(config_folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model folder {folder} has no config.json")
    try:
        raw = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / 'config.json'}:{err.lineno}: not valid JSON ({err.msg})") from err
    if raw.get("model_type", "t5") != "t5":  # T5Config would build a T5 from it anyway, and fail much later
        raise ValueError(f"{folder / 'config.json'} describes a {raw['model_type']!r} model; --random-init builds "
                         "T5 models (FLAN-T5): pass a FLAN-T5 folder")
    config = T5Config.from_pretrained(str(folder))
    return build_from_config(config, seed=seed, dtype=dtype, untied_head=raw.get("tie_word_embeddings") is False)


def build_from_config(config, seed: int = 0, dtype: torch.dtype = torch.float32, untied_head: bool = True):
    """A `T5ForConditionalGeneration` with random weights from a `T5Config` (also used for tiny test models)."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    if untied_head:
        # A head of its own. transformers initialises an untied T5 head with std 1.0, which with random weights
        # gives logits of std ~sqrt(d_model) and a first loss far above ln(vocab); std d_model**-0.5 starts the
        # loss near ln(32128) = 10.4, as a freshly initialised language model should.
        head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        with torch.no_grad():
            head.weight.normal_(mean=0.0, std=config.d_model**-0.5)
        model.lm_head = head
    return model.to(dtype)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total), counting each shared tensor once, as `model.parameters()` does."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
