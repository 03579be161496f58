# rocketchat-webhook: the relay under gunicorn on port 8093, as a non-root user.
#   docker build -t rocketchat-webhook .
#   docker run --rm -p 8093:8093 -e ROCKETCHAT_WEBHOOK_CRITICAL=https://chat.example.com/hooks/ID/TOKEN ... rocketchat-webhook
# Settings come from the environment (README, "Settings"); secrets preferably as files: ROCKETCHAT_WEBHOOK_CRITICAL_FILE=/run/secrets/...
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 rcwebhook \
 && useradd --system --uid 10001 --gid rcwebhook --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rcwebhook \
 && mkdir -p /var/lib/rocketchat-webhook && chown 10001:10001 /var/lib/rocketchat-webhook && chmod 0750 /var/lib/rocketchat-webhook

WORKDIR /app

# The pinned dependencies in their own layer, so a change to the code does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The code, owned by root and read-only to the relay's user.
COPY gunicorn.conf.py rocketchat_webhook.py ./
COPY rcwebhook/ ./rcwebhook/
COPY deploy/docker-healthcheck.py ./

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# State (the journal, the de-duplication memory) in state.sqlite3 there; without a volume it lives and dies with the
# container, and a read-only root file system makes the relay run on memory:// with a WARNING.
ENV HOST=0.0.0.0 \
    PORT=8093 \
    STATE_DIRECTORY=/var/lib/rocketchat-webhook
VOLUME ["/var/lib/rocketchat-webhook"]
EXPOSE 8093

# Slim images have no curl: Python asks GET /health on the relay's own port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["python", "/app/docker-healthcheck.py"]

# On SIGTERM gunicorn answers the requests in flight and drains the queues for up to its graceful_timeout (30 s, longer
# than the delivery deadline): stop the container with more than that (`docker stop -t 45`, compose's stop_grace_period).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "rocketchat_webhook:app"]
