"""kopf handlers: importing this package registers them."""

from llmop.handlers import backend, startup

__all__ = ["backend", "startup"]
