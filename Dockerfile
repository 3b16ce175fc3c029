# consent-ivr: the ARI service (`consent-ivr run`), or any other consent-ivr command:
#   docker build -t consent-ivr .
#   docker run -d -v consent-ivr-data:/app/data \
#       -e CONSENT_IVR_ARI_URL=http://asterisk:8088 -e CONSENT_IVR_ARI_PASSWORD=... consent-ivr
#   docker run --rm -v consent-ivr-data:/app/data consent-ivr records --json
# Configuration: the environment (CONSENT_IVR_ARI_URL/_USER/_PASSWORD/_APP,
# CONSENT_IVR_DATABASE_URL, CONSENT_IVR_RECORDINGS_DIR) and, for everything else, a config file
# mounted and named by CONSENT_IVR_CONFIG (see config.yaml; check it with `config check`).
# Prompt audio is part of the image (/app/var/prompts, the default prompts.audio_dir); what the
# service keeps (SQLite database, recordings) goes to /app/data, the volume to mount. With
# PostgreSQL, set CONSENT_IVR_DATABASE_URL=postgresql://... instead.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# espeak-ng and sox synthesize the prompts (`consent-ivr prompts build`); recordings and prompts
# are WAV, which needs no ffmpeg.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng sox \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 consent \
    && useradd --system --uid 10001 --gid consent --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin consent

WORKDIR /app
COPY . /app
# Editable: the service finds migrations/ and prompts/ in the source tree it was installed from.
RUN pip install --no-cache-dir -e . \
    && install -d -o consent -g consent /app/var /app/data

USER 10001:10001
# Relative paths of the config resolve against /app. A wording change means a new image with
# new audio, never audio left over in a volume.
RUN consent-ivr prompts build && consent-ivr config check

# The HTTP server (prompts for a remote Asterisk's media cache, SMS delivery reports, health)
# listens on all the container's interfaces; publish it only where Asterisk can reach it.
ENV CONSENT_IVR_DATABASE_URL=sqlite:////app/data/consent-ivr.db \
    CONSENT_IVR_RECORDINGS_DIR=/app/data/recordings \
    CONSENT_IVR_HTTP_HOST=0.0.0.0
VOLUME ["/app/data"]

EXPOSE 8090
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8090/health', timeout=4)"]

ENTRYPOINT ["consent-ivr"]
CMD ["run"]
