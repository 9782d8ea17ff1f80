# opsbot: a Telegram ChatOps bot. Build: docker build -t opsbot .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# ssh-keygen/ssh-keyscan for managing known_hosts; tini reaps children and forwards signals.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client tini \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin opsbot \
    && mkdir -p /var/lib/opsbot /etc/opsbot \
    && chown opsbot:opsbot /var/lib/opsbot

WORKDIR /app
COPY pyproject.toml README.md ./
COPY opsbot ./opsbot
RUN pip install .

COPY config/opsbot.example.yaml /etc/opsbot/opsbot.example.yaml

USER opsbot
ENV OPSBOT_DATA_DIR=/var/lib/opsbot
VOLUME ["/var/lib/opsbot"]
# Alert webhooks, /healthz and /metrics, when web.enabled is true.
EXPOSE 8080

# Liveness: the running bot touches $OPSBOT_DATA_DIR/heartbeat every 30 s from its event loop.
# (`opsbot check` would also reach every endpoint: too strong, one dead host must not restart it.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,time; p=os.environ['OPSBOT_DATA_DIR']+'/heartbeat'; sys.exit(0 if time.time()-os.path.getmtime(p) < 90 else 1)"]

ENTRYPOINT ["tini", "--", "opsbot"]
CMD ["run", "--config", "/etc/opsbot/opsbot.yaml"]
