"""The Hugging Face hub, for a --model or --data given as a hub id (imported only then: a run from local folders
never needs it): is it reachable, and a model's config and tokenizer without its weights (for --random-init).
"""
from __future__ import annotations

import os
from pathlib import Path

CONFIG_AND_TOKENIZER = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "spiece.model"]  # everything but the weights


def not_a_folder_here(name: str) -> str:
    """'data/nothing' reads as a hub id, but when `data/` is a folder here the user most likely meant a folder in it:
    say so, and what it holds, before the hub's error ("" when the name does not look like that)."""
    head = Path(name).parts[0] if name else ""
    if "/" not in name or Path(name).is_absolute() or Path(name).exists() or not Path(head).is_dir():
        return ""
    inside = sorted(p.name for p in Path(head).iterdir() if p.is_dir() and not p.name.startswith("."))
    return f"no folder {name!r} here ({head}/ holds: {', '.join(inside) or 'no folders'}), and "


def hub_error(name: str) -> ValueError:
    return ValueError(f"{not_a_folder_here(name)}cannot reach the Hugging Face hub for {name!r} (this machine is "
                      "offline?); pass a local folder with --model, such as --model models/baby-flan-t5 (the small "
                      "model this repository ships, with --data data/dialogsum)")


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
