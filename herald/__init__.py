"""Herald: real-time notifications over Celery, Redis and Server-Sent Events.

This package holds what every Herald process shares: configuration, key names, the
event envelope, subscriber tokens and the Redis-backed records. It imports neither
gevent nor Celery, so the API, the workers and the streamer can all use it.
"""

__version__ = "0.1.0"
