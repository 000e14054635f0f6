"""Unit tests for reading and chunking documents (real tiktoken encoding, seeded offline)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import tiktoken

from rag.errors import InvalidInputError
from rag.ingest import TokenChunker, collect_documents, html_to_text, read_document, validate_doc_id
from rag.tokens import get_encoding


@pytest.fixture(scope="module")
def encoding(tmp_path_factory: pytest.TempPathFactory) -> tiktoken.Encoding:
    return get_encoding("cl100k_base", tmp_path_factory.mktemp("tiktoken"))


def test_encodings_load_offline_and_count_like_openai(encoding: tiktoken.Encoding) -> None:
    assert encoding.encode("hello world") == [15339, 1917]


def test_unknown_encoding_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not available offline"):
        get_encoding("p50k_base", tmp_path)


def test_chunks_respect_size_and_overlap_and_cover_the_text(encoding: tiktoken.Encoding) -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    chunker = TokenChunker(encoding=encoding, size=50, overlap=10)
    chunks = chunker.split(text)
    assert len(chunks) > 10
    assert all(chunker.count(c) <= 50 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert before.split()[-1] in after  # consecutive windows share their boundary
    assert "word0" in chunks[0] and "word999" in chunks[-1]


def test_short_text_is_one_chunk_and_blank_text_none(encoding: tiktoken.Encoding) -> None:
    chunker = TokenChunker(encoding=encoding, size=50, overlap=10)
    assert chunker.split("  A short note.\n\n\n\nSecond line. ") == [
        "A short note.\n\nSecond line."
    ]
    assert chunker.split(" \n ") == []


def test_overlap_must_be_smaller_than_size(encoding: tiktoken.Encoding) -> None:
    with pytest.raises(ValueError):
        TokenChunker(encoding=encoding, size=10, overlap=10)


def test_html_loses_markup_scripts_and_styles() -> None:
    text = html_to_text(
        "<html><head><style>p{}</style><script>alert(1)</script></head>"
        "<body><h1>Title</h1><p>Body <b>text</b>.</p></body></html>"
    )
    assert "Title" in text and "Body" in text and "text" in text
    assert "alert" not in text and "p{}" not in text and "<" not in text


def test_folders_are_read_recursively_with_relative_ids(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "sub" / "b.html").write_text("<p>B</p>")
    (tmp_path / "sub" / "c.txt").write_text("C")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    docs = collect_documents([tmp_path])
    assert [d.doc_id for d in docs] == ["a.md", "sub/b.html", "sub/c.txt"]
    assert docs[1].text.strip() == "B"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("x.pdf", b"%PDF", "unsupported file type"), ("x.txt", b"\xff\xfe\x00", "not UTF-8")],
)
def test_unreadable_files_are_clear_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        read_document(path)
    with pytest.raises(InvalidInputError, match="no such file"):
        collect_documents([tmp_path / "missing.md"])


@pytest.mark.parametrize("doc_id", ["", "../x", "/abs", "a b", "x" * 201])
def test_bad_doc_ids_are_rejected(doc_id: str) -> None:
    with pytest.raises(InvalidInputError, match="doc_id"):
        validate_doc_id(doc_id)
