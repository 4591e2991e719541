# One image for every eventsieve process: the endpoint (`serve`), the stream
# worker (`worker`) and the sink (`sink`); docker-compose.yml picks the command.
# Runtime dependencies only, pinned by the same requirements.lock as `make setup`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_SYSTEM_PYTHON=1 \
    UV_NO_CACHE=1

WORKDIR /app
RUN pip install -q uv==0.13.8 \
 && useradd --system --home-dir /app --shell /usr/sbin/nologin eventsieve

# Dependencies first, so a source change does not reinstall them.
COPY requirements.lock pyproject.toml ./
RUN uv pip install -q -c requirements.lock -r pyproject.toml

COPY README.md eventsieve.toml ./
COPY eventsieve/ eventsieve/
COPY producers/ producers/
COPY streams/ streams/
COPY sinks/ sinks/
COPY schemas/ schemas/
COPY ops/ ops/
# The sink's column decoder is compiled by numba at build, into a cache the
# runtime user owns (numba ignores a cache directory it cannot write): a
# container start loads it (about 4 s with the imports) instead of compiling
# it (about 10 s).
ENV NUMBA_CACHE_DIR=/app/.numba-cache
RUN uv pip install -q --no-deps . \
 && python -c "from sinks.writer import routes_for; routes_for('events.clean', 'events.dropped')" \
 && mkdir -p .eventsieve/streams \
 && chown -R eventsieve .eventsieve .numba-cache

USER eventsieve
ENTRYPOINT ["eventsieve"]
CMD ["--help"]
