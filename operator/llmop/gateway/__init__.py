"""`llmop gateway`: one OpenAI-compatible endpoint for every backend, routed by what llmop observed."""
