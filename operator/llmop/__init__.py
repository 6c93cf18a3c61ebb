"""llmop: run LLM inference runtimes on Kubernetes and report the truth about them."""

API_GROUP = "llmop.dev"
API_VERSION = "v1alpha1"
__version__ = "0.1.0"
