"""One small module per notification channel (kind), each ending in
``register(Channel(...))``; this package imports every module it holds, so
importing it registers them all: adding a channel is adding its module,
nothing else lists it (like ``chm.ingestion.connectors``)."""

from __future__ import annotations

import importlib
import pkgutil

from chm.alerts.channels.base import (
    Channel,
    NamedFields,
    Resolved,
    SendContext,
    SendFailed,
    Undeliverable,
    channel_for,
    kinds,
    register,
)

__all__ = [
    "Channel",
    "NamedFields",
    "Resolved",
    "SendContext",
    "SendFailed",
    "Undeliverable",
    "channel_for",
    "kinds",
    "register",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
