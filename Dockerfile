# One image for all five services: `gitops run <service>` picks which one a container runs.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY cli ./cli
RUN uv sync --frozen --no-dev --no-editable

FROM registry.k8s.io/kubectl:v1.34.4 AS kubectl

FROM python:3.11-slim
# git-watcher renders Kustomize apps with `kubectl kustomize` (the same version the tests use).
COPY --from=kubectl /bin/kubectl /usr/local/bin/kubectl
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 gitops
COPY --from=build /src/.venv /opt/gitops
ENV PATH=/opt/gitops/bin:$PATH \
    GITOPS_HTTP_HOST=0.0.0.0 \
    GITOPS_KUBECTL=/usr/local/bin/kubectl
USER gitops
ENTRYPOINT ["gitops"]
CMD ["--help"]
