"""Models and what they compute: architectures, inference, metrics, thresholds, post-processing."""
