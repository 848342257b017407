# One image for every process type: web (default), worker and beat.
#   docker run IMAGE                                   -> uvicorn on 0.0.0.0:8000
#   docker run IMAGE celery -A communication worker -Q realtime,transactional,default
#   docker run IMAGE celery -A communication worker -Q bulk
#   docker run IMAGE celery -A communication beat --pidfile=
#     (the scheduler is communication.beat's: it sends only while it holds a PostgreSQL advisory
#     lock, so a second beat stands by instead of sending everything twice)
#   docker run IMAGE sh -c 'python manage.py migrate --noinput && python manage.py setup_schedules'
#     once per release, before the new web and workers roll out
# deploy/compose.yaml and deploy/k8s/ run exactly these commands.
# Production sets DATABASE_URL, REDIS_URL (and CELERY_BROKER_URL for RabbitMQ), SECRET_KEY,
# APP_ENV=production and the IDENTITY_* variables; nothing embedded starts then.
# Same Python as the machines that run the tests (3.11), so what is tested is what ships.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=communication.settings \
    APP_ENV=production \
    VAR_DIR=/var/lib/communication \
    STATIC_ROOT=/app/staticfiles \
    HOST=0.0.0.0 \
    PORT=8000
# A fixed numeric uid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app app \
    && mkdir -p /var/lib/communication && chown app:app /var/lib/communication
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app . /app
RUN SECRET_KEY=build DATABASE_URL=postgres://x@localhost/x REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/live', timeout=3)"
CMD ["python", "-m", "communication.server"]
