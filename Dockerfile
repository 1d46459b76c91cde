# failover-bot in a container: `failover-bot serve` (HTTP mode) on $PORT as a non-root user.
#   docker build -t failover-bot .
#   docker run --env-file .env -p 3000:3000 -v "$PWD/failover.toml:/app/failover.toml:ro" failover-bot
# compose.yaml runs it with PostgreSQL and migrates first.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3000 \
    FAILOVER_CONFIG=/app/failover.toml \
    DATABASE_URL=sqlite+aiosqlite:////data/failover.db

WORKDIR /app

# The pinned dependencies first, in their own layer: a code change does not reinstall them.
# requirements.txt ends with "." (the bot itself), which needs the source: left for later.
COPY requirements.txt ./
RUN grep -v '^\.$' requirements.txt > /tmp/pins.txt \
    && pip install -r /tmp/pins.txt \
    && rm /tmp/pins.txt

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY migrations ./migrations
RUN pip install --no-deps . && rm -rf build *.egg-info

# The shipped topology as a default; mount your own over it (FAILOVER_CONFIG).
COPY failover.toml ./

# Not root: the bot needs no privilege; /data holds the SQLite file when DATABASE_URL is unset.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin failover \
    && mkdir -p /data && chown failover /data
USER failover
VOLUME ["/data"]

EXPOSE 3000
# /healthz answers 200 while the bot serves; python's urllib, since the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]

CMD ["failover-bot", "serve"]
