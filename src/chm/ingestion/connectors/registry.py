"""The platforms CHM pulls runs from: each declared once, in its own module.

A platform module (``connectors/<platform>.py``) defines its source model
(a ``SourceBase`` with its ``platform`` literal, its fields and, when it
authenticates otherwise than with a bearer token, its ``credentials()``),
its connector and its status maps, and registers them in one ``Platform``
entry at import::

    PLATFORM = register(Platform(
        name="prefect", source_model=PrefectSource, connector=PrefectConnector,
        statuses={"state_type": PREFECT_STATE}, incremental=None,
        read_time_keys=frozenset({"estimated_run_time"}),
        schedules=PrefectSchedules,
    ))

The package (``chm.ingestion.connectors``) imports every module it holds, so
nothing lists the platforms by hand: the sources file's model
(``chm.ingestion.config``) and the connector lookup (``connector_for``,
``incremental_mode``) are built from the entries registered, as dlt's
``rest_api`` builds its paginators and auth from maps. A test may register a
platform of its own and unregister it afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args, get_origin

from chm.core.schemas import SLUG_PATTERN
from chm.core.status import RunStatus
from chm.ingestion.connectors.base import (
    BadExternalId,
    Connector,
    IncrementalMode,
    ScheduleReader,
    Window,
)
from chm.ingestion.sources import SourceBase

# The tag of a source whose platform has no connector (OpenLineage only).
PUSH = "push"

S = TypeVar("S", bound=SourceBase)
S_contra = TypeVar("S_contra", bound=SourceBase, contravariant=True)


class ConnectorFactory(Protocol[S_contra]):
    """A connector class: one signature for every platform."""

    def __call__(self, source: S_contra, external_id: str, window: Window) -> Connector: ...


class ScheduleReaderFactory(Protocol[S_contra]):
    """A schedule reader class: one signature for every platform that has one."""

    def __call__(self, source: S_contra, external_id: str) -> ScheduleReader: ...


@dataclass(frozen=True, eq=False)
class Platform(Generic[S]):
    """One platform, declared once.

    - ``name``: the ``platform`` of its sources and pipelines (a slug);
    - ``source_model``: its sources' fields and how they authenticate
      (``credentials()``), a ``SourceBase`` whose ``platform`` is ``Literal[name]``;
    - ``connector``: builds the connector of one pipeline's walk;
    - ``statuses``: the maps from the platform's words to canonical statuses,
      by the field of a run they read (keys lower-case, or the codes it sends);
    - ``incremental``: how its API filters runs by time, None when it cannot;
    - ``read_time_keys``: a run's top-level keys the platform computes against
      the clock on every read, never stored and never a change;
    - ``schedules``: reads how the platform schedules a pipeline (its cron, or
      why there is none); None when its API cannot say.
    """

    name: str
    source_model: type[S]
    connector: ConnectorFactory[S]
    statuses: Mapping[str, Mapping[Any, RunStatus]]
    incremental: IncrementalMode | None = None
    read_time_keys: frozenset[str] = field(default_factory=frozenset)
    schedules: ScheduleReaderFactory[S] | None = None


_REGISTRY: dict[str, Platform[Any]] = {}


def register(platform: Platform[S]) -> Platform[S]:
    """Add ``platform`` to the registry (at its module's import); answers it."""
    name = platform.name
    if not re.fullmatch(SLUG_PATTERN, name) or name == PUSH:
        raise ValueError(f"platform name {name!r} is not a slug, or is reserved")
    if _REGISTRY.get(name, platform) is not platform:
        raise ValueError(f"platform {name!r} is already registered")
    model = platform.source_model
    declared = model.model_fields.get("platform")
    annotation = declared.annotation if declared is not None else None
    if get_origin(annotation) is not Literal or get_args(annotation) != (name,):
        raise ValueError(f"{model.__name__}.platform must be Literal[{name!r}]")
    _REGISTRY[name] = platform
    return platform


def unregister(name: str) -> None:
    """Remove a platform (tests register their own and remove it afterwards)."""
    _REGISTRY.pop(name, None)


def platforms() -> tuple[Platform[Any], ...]:
    """Every registered platform, in the order registered."""
    return tuple(_REGISTRY.values())


def platform_of(source: SourceBase) -> Platform[Any] | None:
    """The platform that pulls ``source``'s runs; None for a push-only source."""
    platform = _REGISTRY.get(source.platform)
    if platform is None or not isinstance(source, platform.source_model):
        return None
    return platform


def incremental_mode(source: SourceBase) -> IncrementalMode | None:
    """How ``source``'s platform filters runs by time, or None when it cannot."""
    platform = platform_of(source)
    return platform.incremental if platform is not None else None


def connector_for(source: SourceBase, external_id: str, window: Window) -> Connector:
    """The connector that reads one pipeline's runs from ``source`` over ``window``.
    BadExternalId when ``external_id`` cannot name anything there."""
    platform = platform_of(source)
    if platform is None:
        raise BadExternalId(f"source {source.name!r} (platform {source.platform!r}) is push-only")
    return platform.connector(source, external_id, window)


def read_time_keys(source: SourceBase) -> frozenset[str]:
    """The keys of ``source``'s runs its platform computes at read time."""
    platform = platform_of(source)
    return platform.read_time_keys if platform is not None else frozenset()


def schedule_reader_for(source: SourceBase, external_id: str) -> ScheduleReader | None:
    """The reader of one pipeline's schedule on ``source``'s platform; None when
    the platform cannot say. BadExternalId when ``external_id`` names nothing there."""
    platform = platform_of(source)
    if platform is None or platform.schedules is None:
        return None
    return platform.schedules(source, external_id)
