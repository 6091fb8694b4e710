"""Prefect tasks and flows for the Parallel Task API."""
from parallel_tasks._version import __version__

__all__ = ["__version__"]
