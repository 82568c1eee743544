"""CHM: pipeline run-health service."""

__version__ = "0.1.0"
