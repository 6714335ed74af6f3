"""Celery tasks: notification delivery (``tasks.notifications``), jobs (``tasks.jobs``,
``tasks.demo``), and ``tasks.events.publish``, a shortcut for publishing from a script.

``tasks.app`` holds the Celery application; importing this package does not create it.
"""
