"""pneumoflow: a reproducible pneumonia pipeline for chest X-rays."""

__version__ = "0.1.0"
