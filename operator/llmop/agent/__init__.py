"""`llmop agent`: the model downloader that runs as a native sidecar beside vLLM and llama.cpp.

Those runtimes cannot pull models, so the agent does it for them and speaks Ollama's pull API
shape (`POST /api/pull` with NDJSON progress, `GET /api/tags`, `DELETE /api/delete`), which lets
the operator drive both with one client. Its `GET /startup` answers 200 only once every model
the runtime needs is completely on disk; as the sidecar's startup probe it keeps the runtime
container from starting on a partial model.

    settings.py   what the agent is told: models dir, Hugging Face endpoint and token, timeouts
    store.py      the models dir on disk: where files land, what counts as complete, metadata
    plan.py       which files a model source means, with sizes and digests where known
    download.py   one file: resumable transfer, sha256 verification, atomic rename
    pull.py       a whole pull: plan, fetch each file, record, complete; progress lines
    transfers.py  one shared transfer per model; followers, cancellation
    errors.py     the errors a pull ends with, worded for the user
    server.py     the HTTP API
    cli.py        `llmop agent`
"""
