"""The package version, in one place that every module can import without reaching up to the package."""

__version__ = "0.1.0"
