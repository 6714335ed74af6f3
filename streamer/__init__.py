"""Herald's streamer: a gevent service holding the clients' streams (SSE, WebSocket).

One subscription per process (``broker``: the interface; ``redis_broker``: Redis), a
hub that fans each event out to the local clients of its topic (``hub``), one object
per connection (``client``), the wire formats (``transport``: the interface; ``sse``,
``websocket``, registered in ``transports``) and the HTTP handlers (``app``). Start it
with ``python -m streamer`` or ``herald streamer``; ``__main__`` patches the standard
library with gevent before anything else is imported.
"""
