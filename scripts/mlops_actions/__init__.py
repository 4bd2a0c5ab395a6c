"""mlops-actions: GitHub Actions that take a model from DVC data to a monitored serving image."""

__version__ = "0.1.0"
