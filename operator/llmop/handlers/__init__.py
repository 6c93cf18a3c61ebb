"""kopf handlers: importing this package registers them."""

from llmop.handlers import backend, pull, startup

__all__ = ["backend", "pull", "startup"]
