# One image for every Herald service; compose picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HERALD_HOME=/var/lib/herald
WORKDIR /app
COPY setup.cfg pyproject.toml README.md celeryconfig.py ./
COPY herald ./herald
COPY api ./api
COPY tasks ./tasks
COPY streamer ./streamer
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/herald --create-home herald
USER herald
EXPOSE 8000 8001 5555
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "api:create_app()"]
