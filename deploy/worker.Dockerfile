# The jobtape worker: ffmpeg from Debian, yt-dlp and jobtape from PyPI/the checkout.
# Build from the repository root:  docker build -f deploy/worker.Dockerfile -t jobtape-worker .
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 jobtape
WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobtape ./jobtape
# yt-dlp is a dependency of jobtape; upgrading it in the image keeps site extractors current.
RUN pip install --no-cache-dir . && pip install --no-cache-dir --upgrade yt-dlp

USER jobtape
# Per-job temp dirs (downloaded inputs, ffmpeg outputs) go here; they are removed after each job.
ENV TMPDIR=/tmp \
    JOB_STORE_BACKEND=libsql \
    STORAGE_BACKEND=r2 \
    JOBTAPE_CONCURRENCY=1 \
    JOBTAPE_POLL_INTERVAL=1
# tini forwards SIGTERM to the worker, which stops claiming and lets running jobs end.
ENTRYPOINT ["tini", "--", "jobtape", "worker"]
