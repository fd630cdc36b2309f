"""Logging for Snakemake scripts: everything a stage logs goes to the rule's log file."""

from __future__ import annotations

import logging
import sys


def to_file(path: str, level: int = logging.INFO) -> None:
    """Send the root logger, warnings and any uncaught exception to `path`."""
    logging.basicConfig(
        filename=path,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    default_hook = sys.excepthook

    def log_then_raise(kind, value, traceback):
        logging.getLogger("pneumoflow").error(
            "%s: %s", kind.__name__, value, exc_info=(kind, value, traceback)
        )
        default_hook(kind, value, traceback)

    sys.excepthook = log_then_raise
