"""The sources file: where each platform's runs are read from (contract: Ingestion).

Sources live in the TOML file named by ``CHM_CONFIG``, never in the database.
Every field is validated at load; an error names the file, the source and the
field. Tokens are not in the file: ``token_env`` (and Airflow's
``password_env``) names the environment variable that holds one, read only
when that source is used (SE-001).

Each entry is validated by its platform's source model, the one its module
registered (``chm.ingestion.connectors.registry``): the file's model is built
from the registry, never listed here. A source with an
``openlineage_namespace`` also accepts OpenLineage events pushed to
``POST /api/v1/lineage`` (``chm.ingestion.lineage``); one whose platform has
no pull connector is push-only and has no ``base_url``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)

from chm.core.settings import Environment
from chm.ingestion.connectors import Platform, platforms
from chm.ingestion.connectors.registry import PUSH
from chm.ingestion.sources import AnySource, Slug, SourceBase
from chm.models.base import name_key


class ConfigError(Exception):
    """The sources file is missing, unreadable or invalid (the CLI exits 2)."""


def pull_platforms() -> list[str]:
    """The names of the platforms CHM pulls runs from, as registered."""
    return [platform.name for platform in platforms()]


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
                    f"{', '.join(sorted(pull_platforms()))}; any other platform is push-only "
                    "and needs an openlineage_namespace"
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


class SourcesFile(BaseModel):
    """The file's shape; ``sources`` is narrowed to the registered models below."""

    model_config = ConfigDict(extra="forbid")

    sources: list[AnySource] = Field(default_factory=list)
    # The alerts' named destinations share the file; validated by chm.alerts.
    destinations: list[dict[str, Any]] = Field(default_factory=list)


@lru_cache(maxsize=8)
def _sources_file_model(registered: tuple[Platform[Any], ...]) -> type[SourcesFile]:
    """The sources file's model for the platforms ``registered``: each entry is
    validated by its platform's model (tagged with its name), any other by
    ``PushSource``. Built again only when the registry changes."""
    names = tuple(platform.name for platform in registered)

    def kind(raw: Any) -> str:
        platform = raw.get("platform") if isinstance(raw, dict) else getattr(raw, "platform", None)
        return platform if platform in names else PUSH

    members = [Annotated[p.source_model, Tag(p.name)] for p in registered]
    members.append(Annotated[PushSource, Tag(PUSH)])
    source = Annotated[Union[tuple(members)], Discriminator(kind)]  # type: ignore[valid-type]  # noqa: UP007
    return create_model(
        "SourcesFile",
        __base__=SourcesFile,
        sources=(list[source], Field(default_factory=list)),  # type: ignore[valid-type]
    )


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
        if loc and loc[0] in (*pull_platforms(), PUSH):
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
        parsed = _sources_file_model(platforms()).model_validate(raw)
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
