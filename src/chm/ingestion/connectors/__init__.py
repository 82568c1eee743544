"""One small module per platform; paging, retries and upserts live in the engine.

Each module registers its platform (``registry.Platform``) when it is
imported, and this package imports every module it holds: adding a platform
is adding its module, nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil

from chm.ingestion.connectors.base import (
    BadExternalId,
    Connector,
    Fetched,
    IncrementalMode,
    Page,
    PageRequest,
    PageShapeError,
    PlatformSchedule,
    ScheduleReader,
    SourceRejected,
    Window,
    without_read_time,
)
from chm.ingestion.connectors.registry import (
    Platform,
    connector_for,
    incremental_mode,
    platform_of,
    platforms,
    read_time_keys,
    register,
    schedule_reader_for,
    unregister,
)

__all__ = [
    "BadExternalId",
    "Connector",
    "Fetched",
    "IncrementalMode",
    "Page",
    "PageRequest",
    "PageShapeError",
    "Platform",
    "PlatformSchedule",
    "ScheduleReader",
    "SourceRejected",
    "Window",
    "connector_for",
    "incremental_mode",
    "platform_of",
    "platforms",
    "read_time_keys",
    "register",
    "schedule_reader_for",
    "unregister",
    "without_read_time",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
