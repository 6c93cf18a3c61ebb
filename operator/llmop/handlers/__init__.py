"""kopf handlers: importing this package registers them."""

from llmop.handlers import backend, cache, pull, startup

__all__ = ["backend", "cache", "pull", "startup"]
