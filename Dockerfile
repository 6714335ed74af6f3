# One image for every Herald service; compose picks the command: the API (below), the
# streamer, Flower, and the two kinds of workers (worker-inapp: `-Q herald.tasks,herald.inapp`;
# worker-outbound: `-Q herald.email,herald.webhook -P gevent`, needing HERALD_SMTP_URL and
# HERALD_MAIL_FROM for e-mail). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HERALD_HOME=/var/lib/herald
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY herald ./herald
COPY api ./api
COPY tasks ./tasks
COPY streamer ./streamer
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/herald --create-home herald
USER herald
EXPOSE 8000 8001 5555
# The API as docker-compose.yml and `herald run` start it (see api/worker.py and
# api/gunicorn_conf.py: one /metrics for all workers).
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--worker-class", "api.worker.ApiWorker", \
     "--config", "python:api.gunicorn_conf", \
     "--keep-alive", "5", "--limit-request-line", "4094", "--limit-request-fields", "32", \
     "--limit-request-field_size", "8190", \
     "--control-socket", "/var/lib/herald/gunicorn-api-8000.ctl", \
     "--access-logfile", "-", "api.wsgi:from_environment()"]
