"""Settings: one pydantic-settings class, read from ``CHM_*`` environment variables."""

from __future__ import annotations

import contextlib
import hashlib
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./chm.db"


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHM_", extra="ignore")

    env: Environment = Environment.development
    # Secret: a PostgreSQL URL may carry a password.
    database_url: SecretStr | None = None
    # Reports, the operator pages and chm status read from here when set: a
    # read replica of CHM_DATABASE_URL (docs/scaling.md). Writes, the API's
    # own reads (read your writes) and /metrics stay on CHM_DATABASE_URL.
    read_database_url: SecretStr | None = None
    # PostgreSQL connections per engine and process: a pool keeps up to
    # db_pool_size open and opens up to db_max_overflow more when busy, each
    # closed again as soon as it is returned. Each chm serve process has two
    # engines (synchronous, asynchronous), each chm worker one, so N serve
    # processes and M workers open at most (2N + M) x (db_pool_size +
    # db_max_overflow) connections: 80 for 4 and 2 with the defaults, within
    # PostgreSQL's default max_connections (100, 97 for other roles than
    # superusers). No overflow by default: a connection opened for one
    # request and closed after it costs PostgreSQL a new backend each time
    # (docs/deployment.md).
    db_pool_size: int = Field(default=8, ge=1, le=1000)
    db_max_overflow: int = Field(default=0, ge=0, le=1000)
    api_token: SecretStr | None = None
    # The sources file for ingestion (TOML).
    config: Path | None = None
    log_level: str = "INFO"
    # Key for signing pagination cursors (not a security boundary: it lets the
    # server reject cursors it did not issue).
    # Unset: derived from CHM_API_TOKEN when there is one (so a production
    # server's cursors cannot be forged), else a fixed development key.
    cursor_secret: SecretStr | None = None
    stuck_after_minutes: int = Field(default=360, ge=1)
    # Ingestion reads how a platform schedules a pipeline (docs/ingestion.md,
    # "Schedules learned from the platforms") at most this often per pipeline:
    # a pipeline's schedule is read again once the last read is this old.
    # 0: read it at every ingestion.
    schedule_refresh_s: int = Field(default=3600, ge=0)
    # A request body past this many bytes is refused with a 413 before it is
    # read whole (chm.core.body_limit); OpenLineage events, gzipped or not, may
    # be this large once inflated. 5 MiB: the largest OpenLineage event CHM
    # took before the limit existed.
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    # On SIGTERM (or Ctrl-C) chm serve lets requests in flight finish for at
    # most this long, then cancels them and exits.
    shutdown_timeout_s: int = Field(default=10, ge=0)
    # chm serve keeps an idle HTTP connection open this long: longer than the
    # idle timeout of a load balancer or client in front (60 s is common), so
    # that the server never closes a connection as the other side reuses it.
    keep_alive_s: int = Field(default=65, ge=1, le=3600)
    # The worker (chm worker; docs/worker.md). A lease on a pipeline or a job
    # lasts this long unless its worker renews it (it does, every third of
    # it): a worker killed outright loses its work to another after at most
    # this long.
    worker_lease_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    # How often an idle worker looks for due pipelines and queued jobs.
    worker_poll_s: float = Field(default=1.0, gt=0.0, le=300.0)
    # Pipelines one worker claims at a time (the others stay for other workers).
    worker_batch: int = Field(default=20, ge=1, le=10_000)
    # Retention: runs whose event time is older than this many days are
    # deleted by the worker, in batches, never a pipeline's latest run.
    # Unset: every run is kept.
    retention_days: int | None = Field(default=None, ge=1)
    # How often the worker prunes, and how many runs one prune transaction deletes.
    retention_every_s: float = Field(default=3600.0, gt=0.0)
    retention_batch: int = Field(default=5000, ge=1, le=100_000)
    # Alerts (docs/alerts.md). The worker evaluates every rule at least this
    # often, and within a poll of any write that changed runs.
    evaluate_every_s: float = Field(default=60.0, gt=0.0)
    # A firing alert neither acknowledged nor resolved is notified again this
    # often (0: never).
    alert_repeat_s: float = Field(default=14_400.0, ge=0.0)
    # Deliveries due to one destination within this wait go out as one message.
    alert_group_wait_s: float = Field(default=30.0, ge=0.0)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    # The base of links in messages (later the web page): https://chm.example.com
    public_url: str | None = None
    # Email: smtp://user@host:port or smtps://...; the password apart.
    smtp_url: SecretStr | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    # Slack: the bot token for `slack:#channel` destinations (chat.postMessage).
    slack_bot_token: SecretStr | None = None
    # Where the Slack Web API and PagerDuty's Events API are (tests and proxies).
    slack_api_url: str = "https://slack.com/api/"
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    # How long one send may take, as a whole.
    delivery_timeout_s: float = Field(default=10.0, gt=0.0, le=300.0)
    # The operator pages (docs/web.md) ask for their live part again this
    # often, where JavaScript runs.
    web_refresh_s: int = Field(default=15, ge=1)

    @model_validator(mode="after")
    def _a_send_ends_within_its_lease(self) -> Settings:
        # A send still going when its lease expires could be sent again by
        # another worker (the receiver dedups on X-CHM-Delivery, but noise).
        if self.delivery_timeout_s >= self.worker_lease_s:
            raise ValueError(
                f"CHM_DELIVERY_TIMEOUT_S ({self.delivery_timeout_s:g}) must be below "
                f"CHM_WORKER_LEASE_S ({self.worker_lease_s:g})"
            )
        return self

    @property
    def cursor_key(self) -> bytes:
        if self.cursor_secret is not None:
            return self.cursor_secret.get_secret_value().encode()
        if self.api_token is not None:
            token = self.api_token.get_secret_value().encode()
            return hashlib.sha256(b"chm-cursor-v1:" + token).digest()
        return b"chm-cursor-v1"

    @property
    def effective_database_url(self) -> str:
        if self.database_url is None:
            return DEFAULT_DATABASE_URL
        return self.database_url.get_secret_value()

    @property
    def pool_options(self) -> dict[str, int]:
        """The connection pool's size of each engine (PostgreSQL's; SQLite's is its own)."""
        return {"pool_size": self.db_pool_size, "max_overflow": self.db_max_overflow}

    @property
    def effective_read_database_url(self) -> str:
        """Where report reads go: CHM_READ_DATABASE_URL, else the database itself."""
        if self.read_database_url is None:
            return self.effective_database_url
        return self.read_database_url.get_secret_value()

    def register_secrets(self) -> None:
        """Tell the log filter this configuration's secrets: the API token and the
        database password (``chm.core.redaction.RedactingFilter``)."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from chm.core.redaction import register_secret

        for secret in (self.api_token, self.smtp_password, self.slack_bot_token, self.smtp_url):
            if secret is not None and secret.get_secret_value():
                register_secret(secret.get_secret_value())
        for url in (self.database_url, self.read_database_url):
            if url is not None:
                # A malformed URL is refused elsewhere, with its own message.
                with contextlib.suppress(ArgumentError, ValueError):
                    register_secret(make_url(url.get_secret_value()).password)

    def production_problems(self) -> list[str]:
        """Reasons this configuration must not serve in production (SE-004)."""
        if self.env is not Environment.production:
            return []
        problems = []
        if self.database_url is None:
            problems.append("CHM_ENV=production requires an explicit CHM_DATABASE_URL")
        if self.api_token is None or not self.api_token.get_secret_value():
            problems.append("CHM_ENV=production requires CHM_API_TOKEN")
        return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
