"""Settings read from the environment and a ``.env`` file (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sony_rag.errors import ConfigurationError


def _default_data_dir() -> Path:
    return Path(user_data_dir("sony-rag", appauthor=False)) / "pgdata"


class Settings(BaseSettings):
    """Configuration of sony-rag; every field has an environment variable (see the README's table)."""

    model_config = SettingsConfigDict(
        env_prefix="SONY_RAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SONY_RAG_DATABASE_URL", "database_url"),
        description="Postgres URL; unset means an embedded server in data_dir.",
    )
    pool_min_size: int = Field(default=2, ge=0, description="Connections each pool keeps open.")
    pool_max_size: int = Field(default=10, ge=1, description="Most connections each pool opens.")
    pool_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for a free pooled connection.")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds one connection attempt may take.")
    connect_retries: int = Field(default=5, ge=0, description="Extra attempts while a server wakes up.")
    connect_backoff: float = Field(default=0.25, gt=0, description="First retry delay in seconds; doubles.")
    statement_timeout_ms: int = Field(default=30_000, ge=0, description="Per-statement limit; 0 = none.")
    transaction_pooler: bool | None = Field(
        default=None,
        description="True behind PgBouncer in transaction mode; None detects Neon's '-pooler' hosts.",
    )
    read_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Read replica URLs, comma-separated; retrieval reads from them.")
    replica_max_lag: float = Field(default=2.0, gt=0, description="Seconds a replica may lag before it is left out.")
    replica_retry: float = Field(default=10.0, gt=0, description="Seconds a failing replica is left out.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Embedded server's data folder.")
    text_search_config: str = Field(
        default="english", pattern=r"^[a-z_][a-z0-9_]*$",
        description="Text-search configuration of queries; must match migration 003's column.",
    )
    rrf_k: float = Field(default=1.0, gt=0, description="Rank constant of hybrid search's fusion.")
    hybrid_vector_weight: float = Field(default=1.0, ge=0, description="Weight of the vector leg in hybrid search.")
    hybrid_keyword_weight: float = Field(default=0.4, ge=0, description="Weight of the text leg in hybrid search.")
    embeddings: Literal["local", "st", "fake"] = Field(
        default="local", description="Embeddings the CLI and examples use: the real MiniLM model or the fake."
    )
    chat_model: str | None = Field(
        default=None,
        description="Chat model of `sony-rag chat` and the agent, as 'provider:model' for init_chat_model "
        "(e.g. openai:gpt-4o-mini); unset means the offline answerer.",
    )


    @field_validator("read_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        from sony_rag.replicas import split_urls

        return split_urls(value) if isinstance(value, str) else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_means_embedded(cls, value: object) -> object:
        # `DATABASE_URL=` in a .env file means "not set", not "connect to the default local socket".
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment and ``.env``; raises ConfigurationError."""
    try:
        return Settings()
    except ValidationError as error:
        problem = describe_validation_error(error)
    # Raised outside the except block: pydantic's message quotes the input, and a URL's input is a secret.
    raise ConfigurationError(problem) from None


def describe_validation_error(error: ValidationError) -> str:
    """Return which setting is invalid and why, naming its environment variable but never its value."""
    first = error.errors(include_input=False, include_url=False)[0]
    name = ".".join(str(part) for part in first.get("loc", ())) or "settings"
    variable = "DATABASE_URL" if name == "database_url" else f"SONY_RAG_{name.upper()}"
    return f"invalid settings: {variable} ({name}): {first.get('msg', 'invalid value')}"
