"""searchplay: train LLM search agents by search self-play."""

__version__ = "0.1.0"
