"""Settings: defaults in ``config/settings.toml``, overridden by ``RAG_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULTS_FILE = CONFIG_DIR / "settings.toml"
DEFAULT_VERIFIER = CONFIG_DIR / "semantic_verifier.npz"
PRICES_FILE = CONFIG_DIR / "prices.toml"


class Settings(BaseSettings):
    """Every TTL, threshold and model id the service uses.

    Field defaults live in ``config/settings.toml`` (one place, no code); they are required here so
    that a missing or mistyped default fails loudly at start-up instead of silently.
    """

    model_config = SettingsConfigDict(
        env_prefix="RAG_", toml_file=DEFAULTS_FILE, extra="forbid", frozen=True
    )

    namespace: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    data_dir: Path
    seed_sample_corpus: bool

    redis_url: str
    redis_timeout_s: float = Field(gt=0)
    redis_max_connections: int = Field(ge=4)
    redis_cluster: bool

    qdrant_url: str
    qdrant_api_key: SecretStr
    collection: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")

    embedding_model_path: str
    embedding_model_id: str = Field(min_length=1)
    embedding_batch_size: int = Field(ge=1)

    llm_base_url: str
    llm_api_key: SecretStr
    llm_model: str = Field(min_length=1)
    llm_timeout_s: float = Field(gt=0)
    llm_max_tokens: int = Field(ge=1)
    llm_temperature: float = Field(ge=0, le=2)
    llm_threads: int = Field(ge=1)
    price_model: str

    embedding_ttl_s: int = Field(ge=1)
    search_ttl_s: int = Field(ge=1)
    llm_ttl_s: int = Field(ge=1)
    corpus_version_ttl_s: int = Field(ge=1)
    search_soft_ttl_s: int = Field(ge=1)
    llm_soft_ttl_s: int = Field(ge=1)
    xfetch_beta: float = Field(ge=0)
    embedding_sliding_ttl: bool

    single_flight: bool
    flight_lock_ttl_s: float = Field(gt=0)
    flight_wait_s: float = Field(gt=0)

    semantic_enabled: bool
    semantic_threshold: float = Field(ge=0, le=1)
    semantic_min_score: float = Field(ge=0, le=1)
    semantic_verifier_path: str
    semantic_max_entries: int = Field(ge=1)

    session_ttl_s: int = Field(ge=1)
    session_history_tokens: int = Field(ge=1)

    top_k: int = Field(ge=1)
    max_top_k: int = Field(ge=1)
    max_query_chars: int = Field(ge=1)
    max_document_chars: int = Field(ge=1)
    chunk_tokens: int = Field(ge=16)
    chunk_overlap_tokens: int = Field(ge=0)
    tokenizer_encoding: str

    admin_api_key: SecretStr
    api_keys: list[SecretStr]

    @property
    def verifier_path(self) -> Path:
        return (
            Path(self.semantic_verifier_path) if self.semantic_verifier_path else DEFAULT_VERIFIER
        )

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
        # Precedence: constructor arguments, then RAG_* variables, then config/settings.toml.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))
