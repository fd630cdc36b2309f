"""Data sources: RSNA download, generated synthetic sample, ImageFolder tree."""
