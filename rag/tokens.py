"""tiktoken without a network: seed its cache from the encodings the ``bpe-openai`` package
ships, under the file names tiktoken itself would use (sha1 of the official URL)."""

from __future__ import annotations

import gzip
import hashlib
import os
from importlib import resources
from pathlib import Path

import tiktoken

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base")


def seed_tiktoken_cache(cache_dir: Path) -> None:
    """Write the shipped encodings into ``cache_dir`` and point tiktoken at it.

    Respects a ``TIKTOKEN_CACHE_DIR`` that is already set and holds the files."""
    cache_dir = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache_dir)))
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = resources.files("bpe_openai") / "data"
    for name in SHIPPED_ENCODINGS:
        target = cache_dir / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
            tmp.replace(target)


def get_encoding(name: str, cache_dir: Path) -> tiktoken.Encoding:
    if name not in SHIPPED_ENCODINGS:
        raise ValueError(f"tokenizer encoding {name!r} is not available offline; use one of {SHIPPED_ENCODINGS}")
    seed_tiktoken_cache(cache_dir)
    return tiktoken.get_encoding(name)
