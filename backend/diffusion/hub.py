"""Where model files come from when given as a hub id: the local Hugging Face cache, never the network
(only `download-models` downloads)."""

from __future__ import annotations

import re
from pathlib import Path

from backend.errors import ModelsMissingError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


def is_hub_id(value: str) -> bool:
    """`owner/name`, as opposed to a path (which the resolvers look at first)."""
    return bool(_HUB_ID.match(value)) and not value.endswith(CHECKPOINT_SUFFIXES)


def from_cache(repo_id: str, patterns: list[str], what: str, fix: str) -> Path:
    """The local snapshot folder of a hub repository, never downloading."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as e:
        raise ModelsMissingError(f"{what} {repo_id!r} is not in the Hugging Face cache on this machine",
                                 hint=f"run `{fix}` once (it downloads with progress; afterwards "
                                 "everything works offline)") from e
