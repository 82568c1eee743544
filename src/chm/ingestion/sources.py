"""What every source has, whatever its platform (contract: Ingestion).

Each platform's module (``chm.ingestion.connectors.<platform>``) declares its
own source model, a subclass of ``SourceBase`` with its ``platform`` literal
and its fields, and registers it; the sources file (``chm.ingestion.config``)
is validated against the models registered. Tokens are not in the file:
``token_env`` (and Airflow's ``password_env``) names the environment variable
that holds one, read only when that source is used (SE-001).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chm.core.schemas import SLUG_PATTERN
from chm.core.settings import Environment
from chm.ingestion.credentials import Credentials

EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
SourceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
ClientName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
Namespace = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class TokenMissing(Exception):
    """A source's ``token_env`` names a variable that is not set."""


class SourceBase(BaseModel):
    """The fields every source has, whatever its platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: SourceName
    environment: Slug
    client: ClientName | None = None
    # The CHM environment (CHM_ENV) allowed to use this source (SE-004).
    # Development unless declared: a production process uses only the sources
    # declared for it, never one written for a development machine.
    chm_env: Environment = Environment.development
    token_env: EnvVarName | None = None
    # The OpenLineage job namespace whose events this source's key may push.
    openlineage_namespace: Namespace | None = None
    base_url: HttpUrl | None = Field(default=None, validate_default=True)
    # Create the pipeline of a job that matches none on its first OpenLineage
    # event, in this source's client (chm.ingestion.lineage.unmatched).
    register_pipelines: bool = False
    # Incremental ingestion asks for what changed since the last watermark
    # minus this margin, so that late updates are never missed.
    incremental_overlap_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = 900.0
    # The worker ingests each of this source's pipelines every interval_s
    # seconds (monitoring contract); 0 turns scheduled ingestion off for it.
    interval_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 300.0
    timeout_s: Seconds = 10.0
    max_retries: Annotated[int, Field(ge=0, le=50)] = 5
    max_retry_wait_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    max_pages: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    # Each platform's model narrows this to its own name (a Literal).
    platform: str

    @model_validator(mode="after")
    def _backoff_bounds(self) -> SourceBase:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be below backoff_initial_s")
        return self

    @field_validator("openlineage_namespace")
    @classmethod
    def _namespace_has_a_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("token_env") is None:
            raise ValueError(
                "needs token_env: the key that clients pushing events for this namespace must send"
            )
        return value

    @field_validator("register_pipelines")
    @classmethod
    def _registers_into_a_namespace_and_a_client(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("openlineage_namespace") is None:
            raise ValueError(
                "register_pipelines creates pipelines from OpenLineage events: it needs an "
                "openlineage_namespace"
            )
        if value and info.data.get("client") is None:
            raise ValueError(
                "register_pipelines needs client: a pipeline belongs to exactly one client, "
                "and a source without client serves every client"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_unless_push_only(
        cls, value: HttpUrl | None, info: ValidationInfo
    ) -> HttpUrl | None:
        if value is None and info.data.get("openlineage_namespace") is None:
            raise ValueError("Field required (only a push-only source, with an "
                             "openlineage_namespace, has no base_url)")  # fmt: skip
        return value

    @property
    def pulls(self) -> bool:
        """Whether runs are pulled from this source (it has a ``base_url``)."""
        return self.base_url is not None

    @property
    def base(self) -> str:
        """``base_url`` without a trailing slash, ready for a path to be appended."""
        if self.base_url is None:
            raise ValueError(f"source {self.name!r} has no base_url")
        return str(self.base_url).rstrip("/")

    def token(self, environ: Mapping[str, str]) -> SecretStr | None:
        """The bearer token from the environment, or None when the source needs none."""
        if self.token_env is None:
            return None
        value = environ.get(self.token_env, "")
        if not value:
            raise TokenMissing(
                f"environment variable {self.token_env} (token_env of source {self.name!r}) "
                "is not set"
            )
        return SecretStr(value)

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        """What the client sends to prove who CHM is: by default the token as bearer.
        A platform that authenticates otherwise overrides this in its own model."""
        token = self.token(environ)
        return Credentials.bearer(token.get_secret_value()) if token else Credentials.none()

    def _secret(self, variable: str, environ: Mapping[str, str], what: str) -> str:
        value = environ.get(variable, "")
        if not value:
            raise TokenMissing(
                f"environment variable {variable} ({what} of source {self.name!r}) is not set"
            )
        return value


# A source of any platform, pull or push-only: every model is a SourceBase.
AnySource: TypeAlias = SourceBase
