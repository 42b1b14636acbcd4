# One image for all five services: `gitops run <service>` picks which one a container runs.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY cli ./cli
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 gitops
COPY --from=build /src/.venv /opt/gitops
ENV PATH=/opt/gitops/bin:$PATH \
    GITOPS_HTTP_HOST=0.0.0.0
USER gitops
ENTRYPOINT ["gitops"]
CMD ["--help"]
