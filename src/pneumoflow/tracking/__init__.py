"""MLflow: settings, client, one run's logger, the run cache, logged models, the UI."""
