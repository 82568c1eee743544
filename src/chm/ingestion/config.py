"""The sources file: where each platform's runs are read from (contract: Ingestion).

Sources live in the TOML file named by ``CHM_CONFIG``, never in the database.
Every field is validated at load; an error names the file, the source and the
field. Tokens are not in the file: ``token_env`` (and Airflow's
``password_env``) names the environment variable that holds one, read only
when that source is used (SE-001).

A source with an ``openlineage_namespace`` also accepts OpenLineage events
pushed to ``POST /api/v1/lineage`` (``chm.ingestion.lineage``); one whose
platform has no pull connector is push-only and has no ``base_url``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chm.core.schemas import SLUG_PATTERN
from chm.core.settings import Environment
from chm.ingestion.credentials import Credentials, TokenExchange
from chm.models.base import name_key

EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
SourceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
ClientName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
Namespace = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


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
    token_env: EnvVarName | None = None
    # The OpenLineage job namespace whose events this source's key may push.
    openlineage_namespace: Namespace | None = None
    base_url: HttpUrl | None = Field(default=None, validate_default=True)
    # Incremental ingestion asks for what changed since the last watermark
    # minus this margin, so that late updates are never missed.
    incremental_overlap_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = 900.0
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

    @field_validator("openlineage_namespace")
    @classmethod
    def _namespace_has_a_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("token_env") is None:
            raise ValueError(
                "needs token_env: the key that clients pushing events for this namespace must send"
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
        """What the client sends to prove who CHM is: by default the token as bearer."""
        token = self.token(environ)
        return Credentials.bearer(token.get_secret_value()) if token else Credentials.none()

    def _secret(self, variable: str, environ: Mapping[str, str], what: str) -> str:
        value = environ.get(variable, "")
        if not value:
            raise TokenMissing(
                f"environment variable {variable} ({what} of source {self.name!r}) is not set"
            )
        return value


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


class AirflowSource(SourceBase):
    """Airflow's REST API: stable ``/api/v1`` (Airflow 2) or ``/api/v2`` (Airflow 3).

    ``username`` and ``password_env`` log in: basic auth on v1, a JWT from
    ``POST /auth/token`` on v2. Without them, ``token_env`` is sent as bearer.
    """

    platform: Literal["airflow"]
    api_version: Literal["1", "2"] = "2"
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    password_env: EnvVarName | None = None

    @model_validator(mode="after")
    def _login_pair(self) -> AirflowSource:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        return self

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        if self.username is None or self.password_env is None:
            return super().credentials(environ)
        password = self._secret(self.password_env, environ, "password_env")
        if self.api_version == "1":
            return Credentials.basic(self.username, password)
        exchange = TokenExchange(
            f"{self.base}/auth/token", {"username": self.username, "password": password}
        )
        return Credentials.exchanged(exchange, (password,))


class DbtCloudSource(SourceBase):
    """dbt Cloud Administrative API v2; ``base_url`` is the account's access URL."""

    platform: Literal["dbt_cloud"]
    account_id: Annotated[int, Field(gt=0)]

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        token = self.token(environ)
        if token is None:
            return Credentials.none()
        return Credentials.header("Authorization", token.get_secret_value(), "Token")


class GithubActionsSource(SourceBase):
    """GitHub REST API workflow runs; ``base_url`` is ``https://api.github.com``
    (or a GitHub Enterprise Server's ``https://HOST/api/v3``)."""

    platform: Literal["github_actions"]
    api_version: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")] = "2022-11-28"


class PrefectSource(SourceBase):
    """Prefect 3 REST API; ``base_url`` is the API URL (``PREFECT_API_URL``)."""

    platform: Literal["prefect"]


class DagsterSource(SourceBase):
    """Dagster GraphQL; ``base_url`` is the webserver (or Dagster+ deployment) URL."""

    platform: Literal["dagster"]

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        token = self.token(environ)
        if token is None:
            return Credentials.none()
        return Credentials.header("Dagster-Cloud-Api-Token", token.get_secret_value())


PULL_PLATFORMS = (
    "generic", "databricks", "adf", "airflow", "dbt_cloud", "github_actions", "prefect", "dagster",
)  # fmt: skip


class PushSource(SourceBase):
    """A platform CHM does not pull from (Spark, Flink, dbt Core...): OpenLineage only."""

    platform: Slug

    @model_validator(mode="before")
    @classmethod
    def _push_only(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("openlineage_namespace") is None:
            platform = raw.get("platform")
            if platform is not None:
                raise ValueError(
                    f"unknown platform {platform!r}: the pull platforms are "
                    f"{', '.join(PULL_PLATFORMS)}; any other platform is push-only and needs "
                    "an openlineage_namespace"
                )
        return raw

    @model_validator(mode="after")
    def _no_pull(self) -> PushSource:
        if self.base_url is not None:
            raise ValueError(
                f"platform {self.platform!r} has no pull connector: a push-only source has "
                "no base_url"
            )
        return self


AnySource = (
    GenericSource
    | DatabricksSource
    | AdfSource
    | AirflowSource
    | DbtCloudSource
    | GithubActionsSource
    | PrefectSource
    | DagsterSource
    | PushSource
)


def _source_kind(raw: Any) -> str:
    platform = raw.get("platform") if isinstance(raw, dict) else getattr(raw, "platform", None)
    return platform if platform in PULL_PLATFORMS else "push"


Source = Annotated[
    Annotated[GenericSource, Tag("generic")]
    | Annotated[DatabricksSource, Tag("databricks")]
    | Annotated[AdfSource, Tag("adf")]
    | Annotated[AirflowSource, Tag("airflow")]
    | Annotated[DbtCloudSource, Tag("dbt_cloud")]
    | Annotated[GithubActionsSource, Tag("github_actions")]
    | Annotated[PrefectSource, Tag("prefect")]
    | Annotated[DagsterSource, Tag("dagster")]
    | Annotated[PushSource, Tag("push")],
    Discriminator(_source_kind),
]
PLATFORMS = (*PULL_PLATFORMS, "push")


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

    def for_namespace(self, namespace: str) -> AnySource | None:
        """The source whose ``openlineage_namespace`` is ``namespace`` (exact match)."""
        return next((s for s in self.all if s.openlineage_namespace == namespace), None)


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
    seen_namespaces: dict[str, str] = {}
    for index, source in enumerate(parsed.sources):
        namespace = source.openlineage_namespace
        if namespace is not None and namespace in seen_namespaces:
            problems.append(
                f"source {source.name!r} (sources[{index}]): field 'openlineage_namespace': "
                f"source {seen_namespaces[namespace]!r} already has namespace {namespace!r}"
            )
        if namespace is not None:
            seen_namespaces.setdefault(namespace, source.name)
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
