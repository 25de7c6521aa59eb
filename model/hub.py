"""The Hugging Face hub, for a --model or --data given as a hub id (imported only then: a run from local folders
never needs it): is it reachable, and a model's config and tokenizer without its weights (for --random-init).
"""
from __future__ import annotations

import os

CONFIG_AND_TOKENIZER = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "spiece.model"]  # everything but the weights


def hub_error(name: str) -> ValueError:
    return ValueError(f"cannot reach the Hugging Face hub for {name!r} (this machine is offline?); pass a local "
                      "folder with --model, such as --model models/baby-flan-t5 (the small model this repository "
                      "ships, with --data data/dialogsum)")


def hub_is_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub. Without it, a machine with no network waits through the hub client's
    retries (about a minute) before failing; with it, run.py switches the libraries to their local cache at once."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def config_and_tokenizer(name: str) -> str:
    """The local folder (in the hub's cache) with `name`'s config and tokenizer files, downloaded once."""
    from huggingface_hub import snapshot_download

    return snapshot_download(name, allow_patterns=CONFIG_AND_TOKENIZER)


def hub_config(name: str):
    """`name`'s `config.json` as transformers reads it; offline or unknown, the hub error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except OSError as err:
        raise hub_error(name) from err
