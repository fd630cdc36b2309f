"""The `mlflow:` section of config.yaml, as jobs receive it (no MLflow import: the report reads it)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

SETTINGS_ENV = "PNEUMOFLOW_MLFLOW"  # the mlflow: config section, as JSON


@dataclass(frozen=True)
class TrackingSettings:
    """The `mlflow:` section of config.yaml."""

    tracking_uri: str = "sqlite:///results/mlflow.db"
    experiment: str = "pneumonia"
    reuse_runs: bool = True
    required: bool = True
    telemetry: bool = False
    system_metrics: bool = True
    system_metrics_interval: float = 10.0

    @classmethod
    def from_config(cls, section: Mapping) -> TrackingSettings:
        return cls(**section)

    @classmethod
    def exported(cls) -> TrackingSettings:
        return cls.from_config(exported_section())

    @property
    def uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the configured URI."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri

    @property
    def server_url(self) -> str | None:
        """The tracking server's web address (None for a local sqlite store)."""
        return self.uri.rstrip("/") if self.uri.startswith(("http://", "https://")) else None


def export_settings(section: Mapping) -> None:
    """Hand the `mlflow:` section to every job through the environment (the Snakefile does,
    on every parse). Not a rule param: where runs are logged does not change a result."""
    os.environ[SETTINGS_ENV] = json.dumps(dict(section), sort_keys=True)


def exported_section() -> dict:
    """The `mlflow:` section export_settings handed on ({}: the defaults)."""
    return json.loads(os.environ.get(SETTINGS_ENV) or "{}")
