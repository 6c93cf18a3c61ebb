# The llmop image: the operator (`llmop run`) and the model-download agent (`llmop agent`, the
# sidecar of vLLM and llama.cpp pods). Build from the repository root:
#
#   docker build -t ghcr.io/llmop/llmop:0.1.0 .
#
# It installs the same package as `pip install .`, runs as a non-root user, and needs no
# writable path but /tmp (the chart mounts an emptyDir there and sets readOnlyRootFilesystem).

ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# Bytecode is compiled at install time; at run time nothing is written next to the code.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/llmop/bin:$PATH \
    HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/llmop \
    && /opt/llmop/bin/pip install --no-cache-dir --no-index --find-links /wheels llmop \
    && /opt/llmop/bin/pip uninstall -y pip \
    && /opt/llmop/bin/llmop --version
# A numeric user, so that `runAsNonRoot: true` can verify it without a passwd lookup.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["llmop"]
CMD ["run"]
