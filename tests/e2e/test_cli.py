"""The ``rag`` command: in-process ingestion, and the client commands against a running app."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rag.cache.layers import INVALIDATION_TARGETS
from services.cli import main
from tests.conftest import Running


def test_ingest_reads_folders_shows_progress_and_replaces_on_rerun(
    tmp_path: Path,
    valkey_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "one.md").write_text("# One\n\nThe first document talks about caching.")
    (docs / "two.html").write_text("<h1>Two</h1><p>The second one talks about streaming.</p>")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("RAG_NAMESPACE", namespace)

    assert main(["ingest", str(docs)]) == 0
    out = capsys.readouterr()
    assert "ingested 2 documents as 2 chunks (replaced 0)" in out.out
    assert "chunk" in out.err  # the progress bar

    assert main(["ingest", str(docs)]) == 0
    assert "(replaced 2)" in capsys.readouterr().out


def test_ingest_rejects_unsupported_files_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    assert main(["ingest", str(tmp_path / "report.pdf")]) == 2
    assert "unsupported file type '.pdf'" in capsys.readouterr().err


def test_ask_stream_and_stats_against_a_running_service(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "What is Qdrant?", "--url", running.url]) == 0
    first = capsys.readouterr()
    assert first.out.strip() and "'llm': 'miss'" in first.err

    assert main(["ask", "What is Qdrant?", "--stream", "--url", running.url]) == 0
    streamed = capsys.readouterr()
    assert streamed.out.strip() == first.out.strip()
    assert "'llm': 'hit'" in streamed.err

    assert main(["cache", "stats", "--url", running.url]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "layer",
        "hit",
        "miss",
        "semantic",
        "bypass",
        "hit",
        "rate",
    ]
    assert "llm" in table and "upstream calls: llm" in table
    rows = table.split("\n\n")[0].splitlines()[1:]
    reported = httpx.get(f"{running.url}/stats").json()["layers"]
    assert [row.split()[0] for row in rows] == list(reported)  # every layer the service counts

    assert main(["semantic", "report", "--url", running.url]) == 0
    report = capsys.readouterr().out.splitlines()
    [scope] = httpx.get(f"{running.url}/stats").json()["semantic"]["scopes"]
    assert report[0] == "mode: on"  # these tests run the static rule
    assert report[1].split()[:3] == ["scope", "judged", "false"]
    assert report[2].split()[0] == scope["scope"] and report[2].endswith("yes")  # serving


def test_invalidate_offers_the_registry_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "invalidate", "--help"]) == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in INVALIDATION_TARGETS), shown
    assert main(["cache", "invalidate", "--layer", "everything"]) == 2
    err = capsys.readouterr().err
    assert "'everything' is not one of" in err
    assert all(repr(name) in err for name in INVALIDATION_TARGETS)
    assert main(["cache", "invalidate", "--layer", "llm", "--all"]) == 2
    assert "exactly one of --layer, --tag and --all" in capsys.readouterr().err


def test_errors_are_one_clean_line_and_help_follows_click_conventions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("serve", "ingest", "ask", "cache", "semantic"))
    assert main(["semantic", "calibrate", "--help"]) == 0
    assert "--max-false-hit-rate" in capsys.readouterr().out
    assert main(["ask"]) == 2
    assert "Missing argument 'QUERY'" in capsys.readouterr().err
    assert main(["nonsense"]) == 2
    assert "No such command 'nonsense'" in capsys.readouterr().err


def test_serve_refuses_weak_production_keys_without_printing_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "Zq8-too-short"
    monkeypatch.setenv("RAG_ENVIRONMENT", "production")
    monkeypatch.setenv("RAG_ADMIN_API_KEY", key)
    assert main(["serve", "--port", "1"]) == 2
    out = capsys.readouterr()
    assert "the settings are not valid" in out.err and "at least 16 characters" in out.err
    assert key not in out.err + out.out


def test_client_commands_say_when_the_service_is_not_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ask", "hello", "--url", "http://127.0.0.1:1"]) == 2
    assert "is `rag serve` running?" in capsys.readouterr().err
    assert main(["cache", "stats", "--url", "http://127.0.0.1:1"]) == 2
    assert "cannot reach the service" in capsys.readouterr().err
