"""Settings: defaults from rag/config/settings.toml, RAG_* overrides, and clear refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rag.settings import Settings


def test_defaults_come_from_the_config_file() -> None:
    s = Settings()
    assert (s.embedding_ttl_s, s.search_ttl_s, s.llm_ttl_s) == (7 * 86400, 3600, 3600)
    assert s.redis_url == "" and s.qdrant_url == "" and s.llm_base_url == ""  # embedded parts


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM_TTL_S", "120")
    monkeypatch.setenv("RAG_API_KEYS", '["k1", "k2"]')
    s = Settings()
    assert s.llm_ttl_s == 120
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"llm_ttl_s": 0}, "greater than or equal to 1"),
        ({"chunk_overlap_tokens": 500}, "chunk_overlap_tokens must be smaller"),
        ({"top_k": 50}, "top_k must be between"),
        ({"namespace": "a:b"}, "namespace"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(
    override: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**override)  # type: ignore[arg-type]


def test_production_refuses_keys_padded_with_whitespace() -> None:
    """A padded admin key equal to a tenant's once stripped would let that tenant in (#21)."""
    key = "k" * 32
    with pytest.raises(ValidationError, match="whitespace"):
        Settings(environment="production", admin_api_key=f" {key} ", api_keys=[key])


def test_settings_that_do_not_parse_are_one_clean_line_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    monkeypatch.setenv("RAG_API_KEYS", "not json")
    assert main(["serve", "--port", "1"]) != 0
    err = capsys.readouterr().err
    assert "the settings are not valid" in err and "api_keys" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_503_for_redis_away_says_when_to_come_back() -> None:
    from rag.errors import CacheUnavailableError
    from services.api.errors import headers_for, http_status_for

    away = CacheUnavailableError("the session store (Redis) is unreachable")
    assert http_status_for(away) == 503 and headers_for(away) == {"Retry-After": "1"}
