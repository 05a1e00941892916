"""Real uvicorn servers on free loopback ports for tests (the helpers live in searchplay.web)."""

from searchplay.web import free_port, running_server

__all__ = ["free_port", "running_server"]
