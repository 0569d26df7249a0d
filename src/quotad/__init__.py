"""quotad: usage metering and quotas for API providers."""

__version__ = "0.1.0"
