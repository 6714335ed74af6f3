"""Celery tasks: notification delivery, jobs and their lifecycle events.

``tasks.factory.make_celery(config)`` builds a Celery app from a ``Config``;
``tasks.app`` is the entry point of ``celery -A tasks.app``. Importing this package
creates no app and reads no configuration.
"""
