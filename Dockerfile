# syntax=docker/dockerfile:1

# Build stage: install the broker and its dependencies into a virtualenv.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# schema.graphql and README.md are part of the wheel (hatch force-include, readme).
COPY pyproject.toml README.md schema.graphql ./
COPY broker/ broker/
RUN pip install .

# Runtime stage: the virtualenv only, no build tools, no sources.
FROM python:3.11-slim

RUN groupadd --gid 10001 broker \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin broker

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BROKER_LOG_FORMAT=json \
    BROKER_AUTH=oidc

WORKDIR /app
USER 10001:10001
EXPOSE 8000

ENTRYPOINT ["broker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
