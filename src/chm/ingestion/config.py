"""The sources file: where each platform's runs are read from (contract: Ingestion).

Sources live in the TOML file named by ``CHM_CONFIG``, never in the database.
Every field is validated at load; an error names the file, the source and the
field. Tokens are not in the file: ``token_env`` names the environment
variable that holds one, read only when that source is used (SE-001).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from chm.core.schemas import SLUG_PATTERN
from chm.core.settings import Environment
from chm.models.base import name_key

EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
SourceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
ClientName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class ConfigError(Exception):
    """The sources file is missing, unreadable or invalid (the CLI exits 2)."""


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
    base_url: HttpUrl
    token_env: EnvVarName | None = None
    timeout_s: Seconds = 10.0
    max_retries: Annotated[int, Field(ge=0, le=50)] = 5
    max_retry_wait_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    max_pages: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000

    @model_validator(mode="after")
    def _backoff_bounds(self) -> SourceBase:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be below backoff_initial_s")
        return self

    @property
    def base(self) -> str:
        """``base_url`` without a trailing slash, ready for a path to be appended."""
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


class GenericSource(SourceBase):
    """The partner feed protocol of the contract."""

    platform: Literal["generic"]


class DatabricksSource(SourceBase):
    """Databricks Jobs API ``runs/list``; ``base_url`` is the workspace URL."""

    platform: Literal["databricks"]
    api_version: Literal["2.1", "2.2"] = "2.2"


class AdfSource(SourceBase):
    """Azure Data Factory ``queryPipelineRuns``; ``base_url`` is the management endpoint."""

    platform: Literal["adf"]
    subscription_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
    resource_group: Annotated[str, StringConstraints(pattern=r"^[-\w.()]{1,90}$")]
    factory_name: Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$", min_length=3, max_length=63),
    ]
    # queryPipelineRuns requires a lastUpdated window: each ingestion asks for
    # the runs updated in the last ``lookback_hours`` (ADF keeps 45 days).
    lookback_hours: Annotated[float, Field(gt=0, le=45 * 24)] = 72.0


AnySource = GenericSource | DatabricksSource | AdfSource
Source = Annotated[AnySource, Field(discriminator="platform")]
PLATFORMS = ("generic", "databricks", "adf")


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(default_factory=list)


class Sources:
    """The validated sources, and which one serves a given pipeline."""

    def __init__(self, sources: Sequence[AnySource]) -> None:
        self.all = list(sources)
        self._by_key: dict[tuple[str, str, str | None], AnySource] = {
            (s.platform, s.environment, name_key(s.client) if s.client else None): s
            for s in self.all
        }

    def for_pipeline(self, platform: str, environment: str, client_name: str) -> AnySource | None:
        """The source with the pipeline's platform and environment, its client's own
        first, else the one with no client (contract: Ingestion)."""
        own = self._by_key.get((platform, environment, name_key(client_name)))
        return own or self._by_key.get((platform, environment, None))


def _describe(raw: Any, error: Mapping[str, Any]) -> str:
    loc = list(error.get("loc", ()))
    where = "the file"
    if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
        index = loc[1]
        name = None
        if isinstance(raw, dict) and isinstance(raw.get("sources"), list):
            entries = raw["sources"]
            if index < len(entries) and isinstance(entries[index], dict):
                name = entries[index].get("name")
        where = f"source {name!r} (sources[{index}])" if name else f"sources[{index}]"
        loc = loc[2:]
        # A discriminated union adds the platform tag to the path: not a field.
        if loc and loc[0] in PLATFORMS:
            loc = loc[1:]
    field = ".".join(str(p) for p in loc) or "platform"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: field {field!r}: {message}"


def parse_sources(
    raw: Any, origin: str, environment: Environment = Environment.development
) -> Sources:
    """Validate the parsed TOML document ``raw`` for a process of ``environment``
    (CHM_ENV); ``origin`` names it in errors."""
    try:
        parsed = SourcesFile.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(_describe(raw, e) for e in exc.errors())
        raise ConfigError(f"{origin}: {details}") from None
    problems = []
    seen_names: dict[str, int] = {}
    seen_scopes: dict[tuple[str, str, str | None], str] = {}
    for index, source in enumerate(parsed.sources):
        if source.name in seen_names:
            problems.append(
                f"source {source.name!r} (sources[{index}]): field 'name': "
                f"duplicates sources[{seen_names[source.name]}]"
            )
        seen_names.setdefault(source.name, index)
        scope = (
            source.platform,
            source.environment,
            name_key(source.client) if source.client else None,
        )
        if scope in seen_scopes:
            problems.append(
                f"source {source.name!r} (sources[{index}]): field 'client': source "
                f"{seen_scopes[scope]!r} already serves platform {source.platform!r}, "
                f"environment {source.environment!r} and client {source.client!r}"
            )
        seen_scopes.setdefault(scope, source.name)
    for index, source in enumerate(parsed.sources):
        if source.chm_env is not environment:
            problems.append(
                f"source {source.name!r} (sources[{index}]): field 'chm_env': the source is "
                f"for the {source.chm_env.value} environment and this process runs as "
                f"{environment.value} (CHM_ENV); refusing it (SE-004)"
            )
    if problems:
        raise ConfigError(f"{origin}: " + "; ".join(problems))
    return Sources(parsed.sources)


def load_sources(path: Path | None, environment: Environment = Environment.development) -> Sources:
    """Read and validate the sources file named by ``CHM_CONFIG`` for a process of
    ``environment``: a source declared for another environment is refused."""
    if path is None:
        raise ConfigError("CHM_CONFIG is not set: it must name the sources file (TOML)")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: the sources file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the sources file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_sources(raw, str(path), environment)
