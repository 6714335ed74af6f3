"""Celery tasks and the publishing side of Herald.

``tasks.events.publish`` is the one function any process calls to fan out an event.
``tasks.app`` holds the Celery application; importing this package does not create it.
"""
