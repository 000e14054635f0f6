"""tiktoken without a network: seed its cache from the encodings the ``bpe-openai`` package
ships, under the file names tiktoken itself would use (sha1 of the official URL)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path

import tiktoken

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base")


def seed_tiktoken_cache(cache_dir: Path) -> None:
    """Write the shipped encodings into ``cache_dir`` and point tiktoken at it.

    Respects a ``TIKTOKEN_CACHE_DIR`` that is already set and holds the files."""
    cache_dir = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache_dir)))
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = _shipped_data_dir()
    for name in SHIPPED_ENCODINGS:
        target = cache_dir / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
            tmp.replace(target)


def _shipped_data_dir() -> Path:
    # Located, not imported: importing bpe_openai builds its own tokenizers (slow, noisy).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bpe-openai package (offline tiktoken encodings) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def get_encoding(name: str, cache_dir: Path) -> tiktoken.Encoding:
    if name not in SHIPPED_ENCODINGS:
        raise ValueError(
            f"tokenizer encoding {name!r} is not available offline; use one of {SHIPPED_ENCODINGS}"
        )
    seed_tiktoken_cache(cache_dir)
    return tiktoken.get_encoding(name)
