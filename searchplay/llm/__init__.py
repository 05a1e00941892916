"""Text generation engines: the Engine protocol and its transformers implementation."""

from searchplay.llm.base import Engine, Generation, SamplingParams

__all__ = ["Engine", "Generation", "SamplingParams"]
