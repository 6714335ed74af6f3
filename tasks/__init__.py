"""Celery tasks: notification delivery (``tasks.notifications``), jobs (``tasks.jobs``,
``tasks.demo``), and ``tasks.events.publish``, a shortcut for publishing from a script.

``tasks.factory.make_celery(config)`` builds a Celery app from a ``Config``;
``tasks.app`` is the entry point of ``celery -A tasks.app``. Importing this package
creates no app and reads no configuration.
"""
