# opsbot: a Telegram ChatOps bot.  Build: docker build -t opsbot:0.1.0 .
# The base is pinned to an exact tag (add @sha256:<digest> from your registry to pin it fully);
# dependencies get their own layer, so editing the code does not reinstall them.
FROM python:3.11.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ssh-keygen/ssh-keyscan for managing known_hosts; tini reaps children and forwards signals.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client tini \
    && rm -rf /var/lib/apt/lists/*

# uid/gid 10001: files mounted into the container (SSH key, secrets) must be readable by it.
RUN groupadd --gid 10001 opsbot \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin opsbot \
    && mkdir -p /var/lib/opsbot /etc/opsbot /home/opsbot/.ssh \
    && chown opsbot:opsbot /var/lib/opsbot /home/opsbot/.ssh \
    && chmod 0700 /home/opsbot/.ssh

WORKDIR /app
# 1. dependencies only, the lock's exact versions with their hashes (requirements/runtime.txt, as
#    the tests ran them): this layer is rebuilt when the lock changes, not the code
COPY requirements/runtime.txt ./requirements/
RUN pip install --require-hashes -r requirements/runtime.txt
# 2. the code, built by the locked setuptools (nothing unpinned is fetched)
COPY pyproject.toml README.md ./
COPY opsbot ./opsbot
RUN pip install --no-deps --no-build-isolation . && rm -rf build

COPY config/opsbot.example.yaml /etc/opsbot/opsbot.example.yaml

USER 10001:10001
ENV HOME=/home/opsbot \
    OPSBOT_DATA_DIR=/var/lib/opsbot
VOLUME ["/var/lib/opsbot"]
# Alert webhooks, /healthz and /metrics, when web.enabled is true.
EXPOSE 8080

# Liveness: the running bot touches $OPSBOT_DATA_DIR/heartbeat every 30 s from its event loop.
# (`opsbot check` would also reach every endpoint: too strong, one dead host must not restart it.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,time; p=os.environ['OPSBOT_DATA_DIR']+'/heartbeat'; sys.exit(0 if time.time()-os.path.getmtime(p) < 90 else 1)"]

ENTRYPOINT ["tini", "--", "opsbot"]
CMD ["run", "--config", "/etc/opsbot/opsbot.yaml"]
