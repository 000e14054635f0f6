"""Settings: defaults in ``rag/config/settings.toml`` (package data), overridden by ``RAG_*``
environment variables."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag.semantic.verifier import VERIFIERS

# RAG_SEMANTIC_MODE: what the semantic cache does (rag.semantic.policy)
SemanticMode = Literal["off", "shadow", "auto", "on"]

CONFIG_DIR = Path(__file__).resolve().parent / "config"  # package data: any install finds it
DEFAULTS_FILE = CONFIG_DIR / "settings.toml"
DEFAULT_VERIFIER = CONFIG_DIR / "semantic_verifier.npz"
DEFAULT_CROSS_ENCODER = CONFIG_DIR / "semantic_cross_encoder.npz"
SHIPPED_VERIFIERS = {"mlp": DEFAULT_VERIFIER, "cross-encoder": DEFAULT_CROSS_ENCODER}  # by kind
PRICES_FILE = CONFIG_DIR / "prices.toml"

_TENANT = re.compile(r"^([A-Za-z0-9_-]{1,32}):(.+)$")
_PLACEHOLDER_WORDS = ("change", "placeholder", "example", "secret", "password", "your", "xxx")
MIN_KEY_CHARS = 16


def _is_placeholder(key: str) -> bool:
    lowered = key.strip().lower()
    return len(lowered) < MIN_KEY_CHARS or any(word in lowered for word in _PLACEHOLDER_WORDS)


class Settings(BaseSettings):
    """Every TTL, threshold and model id the service uses.

    Field defaults live in ``rag/config/settings.toml`` (one place, no code); they are required
    here so that a missing or mistyped default fails loudly at start-up instead of silently.
    """

    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        toml_file=DEFAULTS_FILE,
        extra="forbid",
        frozen=True,
        # A refused start must not print the keys it refused (nor any other value given).
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production"]
    namespace: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    data_dir: Path
    access_log: bool
    telemetry: bool
    seed_sample_corpus: bool
    seed_project_docs: bool

    redis_url: str
    redis_timeout_s: float = Field(gt=0)
    redis_max_connections: int = Field(ge=4)
    redis_cluster: bool

    qdrant_url: str
    qdrant_api_key: SecretStr
    collection: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    edge_hnsw_ef: int = Field(ge=4)
    edge_index_after: int = Field(ge=1)

    embedding_model_path: str
    embedding_model_id: str = Field(min_length=1)
    embedding_batch_size: int = Field(ge=1)
    ingest_threads: int = Field(ge=0)  # 0: every core this process may use
    ingest_switch_chunks: int = Field(ge=1)

    llm_base_url: str
    llm_api_key: SecretStr
    llm_model: str = Field(min_length=1)
    llm_timeout_s: float = Field(gt=0)
    llm_max_tokens: int = Field(ge=1)
    llm_stop: list[str]
    context_sentences: int = Field(ge=0)
    llm_dry_multiplier: float = Field(ge=0, allow_inf_nan=False)
    llm_temperature: float = Field(ge=0, le=2)
    llm_threads: int = Field(ge=1)
    llm_max_retries: int = Field(ge=0, le=10)
    price_model: str

    embedding_ttl_s: int = Field(ge=1)
    search_ttl_s: int = Field(ge=1)
    llm_ttl_s: int = Field(ge=1)
    rewrite_ttl_s: int = Field(ge=1)
    corpus_version_poll_s: float = Field(gt=0)
    search_soft_ttl_s: int = Field(ge=1)
    llm_soft_ttl_s: int = Field(ge=1)
    xfetch_beta: float = Field(ge=0)
    embedding_sliding_ttl: bool

    single_flight: bool
    flight_lock_ttl_s: float = Field(gt=0)
    flight_wait_s: float = Field(gt=0)
    relay_stream_ttl_s: int = Field(ge=1)
    near_cache_max_bytes: int = Field(ge=0)
    near_cache_fresh_s: float = Field(ge=0)
    near_cache_keep_s: float = Field(ge=0)
    near_cache_hedge_s: float = Field(ge=0, allow_inf_nan=False)
    max_generations: int = Field(ge=0)  # 0: see generation_slots
    max_waiting_generations: int = Field(ge=0)
    max_generation_wait_s: float = Field(gt=0, allow_inf_nan=False)
    overload_retry_after_s: int = Field(ge=1)

    semantic_mode: SemanticMode
    semantic_max_false_hit_rate: float = Field(gt=0, lt=1)
    semantic_auto_thresholds: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=1)
    semantic_audit_rate: float = Field(ge=0, le=1)
    semantic_judge_min_cosine: float = Field(ge=0, le=1)
    semantic_outcomes_ttl_s: int = Field(ge=1)
    semantic_threshold: float = Field(ge=0, le=1)
    semantic_min_score: float = Field(ge=0, le=1)
    semantic_verifier: str  # a kind registered in rag.semantic.verifier.VERIFIERS
    semantic_verifier_path: str
    semantic_max_entries: int = Field(ge=1)

    session_ttl_s: int = Field(ge=1)
    session_history_tokens: int = Field(ge=1)

    top_k: int = Field(ge=1)
    max_top_k: int = Field(ge=1)
    max_query_chars: int = Field(ge=1)
    max_document_chars: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    chunk_tokens: int = Field(ge=16)
    chunk_overlap_tokens: int = Field(ge=0)
    tokenizer_encoding: str

    admin_api_key: SecretStr
    api_keys: list[SecretStr]
    metrics_api_key: SecretStr
    request_id_secret: SecretStr
    tenant_rate_per_s: float = Field(ge=0, allow_inf_nan=False)
    tenant_burst: int = Field(ge=1)

    @property
    def generation_slots(self) -> int:
        """LLM generations run at once per process. By default 1 for the embedded llama.cpp
        server, which generates one answer at a time anyway: the rest then wait in the service's
        own queue, which hands the next slot to the question most requests wait for, instead of
        in the server's first-come queue. 4 for an LLM at ``llm_base_url``."""
        if self.max_generations:
            return self.max_generations
        return 4 if self.llm_base_url else 1

    @property
    def verifier_path(self) -> Path:
        """The weight file of the ``semantic_verifier`` kind: ``semantic_verifier_path``, or
        else the file shipped for that kind."""
        if self.semantic_verifier_path:
            return Path(self.semantic_verifier_path)
        return SHIPPED_VERIFIERS[self.semantic_verifier]

    def api_key_tenants(self) -> list[tuple[str, str]]:
        """(key, tenant name) for each of ``api_keys``: ``name:key`` names its tenant; a bare key's
        tenant is named after a hash of it."""
        pairs = []
        for secret in self.api_keys:
            value = secret.get_secret_value()
            named = _TENANT.match(value)
            if named:
                pairs.append((named.group(2), named.group(1)))
            else:
                pairs.append((value, "k" + hashlib.sha256(value.encode()).hexdigest()[:10]))
        return pairs

    def tenant_namespaces(self) -> dict[str, str]:
        """Tenant name → key namespace. With no API keys, one tenant ``""`` uses ``namespace``;
        otherwise every tenant has ``<namespace>.<tenant>`` and never reads another's entries."""
        if not self.api_keys:
            return {"": self.namespace}
        return {tenant: f"{self.namespace}.{tenant}" for _, tenant in self.api_key_tenants()}

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        keys = [key for key, _ in self.api_key_tenants()]
        if len(set(keys)) != len(keys):
            raise ValueError("api_keys holds the same key twice")
        if self.environment == "development":
            return self
        admin = self.admin_api_key.get_secret_value()
        if not admin.strip():
            raise ValueError("environment 'production' needs admin_api_key (RAG_ADMIN_API_KEY)")
        if any(key != key.strip() for key in [admin, *keys]):
            raise ValueError(
                "environment 'production' refuses keys with leading or trailing whitespace"
            )
        if admin in keys:
            raise ValueError(
                "environment 'production' refuses an API key (api_keys) equal to admin_api_key: "
                "a tenant's key must not open the admin endpoints"
            )
        metrics = self.metrics_api_key.get_secret_value()
        if metrics and metrics in [admin, *keys]:
            raise ValueError(
                "environment 'production' refuses a metrics_api_key equal to another key: "
                "the scraper's token must open /metrics only"
            )
        if any(_is_placeholder(key) for key in [admin, *keys, *([metrics] if metrics else [])]):
            raise ValueError(
                f"environment 'production' refuses placeholder keys: every key needs at least "
                f"{MIN_KEY_CHARS} characters and none of {', '.join(_PLACEHOLDER_WORDS)} "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return self

    @field_validator("semantic_auto_thresholds")
    @classmethod
    def _sort_thresholds(cls, thresholds: list[float]) -> list[float]:
        return sorted(set(thresholds))

    @field_validator("semantic_verifier")
    @classmethod
    def _check_verifier(cls, kind: str) -> str:
        if kind not in VERIFIERS:
            raise ValueError(f"not a registered verifier kind ({', '.join(VERIFIERS)})")
        return kind

    @model_validator(mode="after")
    def _check_verifier_file(self) -> Settings:
        if not self.semantic_verifier_path and self.semantic_verifier not in SHIPPED_VERIFIERS:
            raise ValueError(
                f"semantic_verifier {self.semantic_verifier!r} ships no weights: "
                "set semantic_verifier_path"
            )
        return self

    @model_validator(mode="after")
    def _check_redis(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError("redis_cluster needs redis_url: the embedded Valkey is one server")
        return self

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_tokens")
        if not 1 <= self.top_k <= self.max_top_k:
            raise ValueError("top_k must be between 1 and max_top_k")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: constructor arguments, then RAG_* variables, then rag/config/settings.toml.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def env_example() -> str:
    """``config/rag.env.example``: every setting as the ``RAG_*`` variable that overrides it,
    commented out at its default, under the comments of ``settings.toml`` (the one place the
    defaults and their meanings are written)."""
    lines = [
        "# Every RAG_* setting at its default, generated from rag/config/settings.toml by",
        "# `python scripts/make_env_example.py` (a test checks it is current). Uncomment to change",
        "# one; a value that is JSON (lists) stays JSON.",
        "",
    ]
    for raw in DEFAULTS_FILE.read_text().splitlines()[2:]:  # past the file's own header
        line = raw.strip()
        if not line or line.startswith("#"):
            lines.append(line)
            continue
        assignment, _, meaning = line.partition("  #")
        name, _, value = (part.strip() for part in assignment.partition("="))
        value = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        if meaning:
            lines.append(f"# {meaning.strip()}")
        lines.append(f"# RAG_{name.upper()}={value}")
    return "\n".join(lines) + "\n"
