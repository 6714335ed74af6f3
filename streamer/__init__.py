"""Herald's streamer: a gevent service holding Server-Sent-Events connections.

One Redis subscription per process (``broker``), a hub that fans each event out to the
local clients of its topic (``hub``), one object per connection (``client``) and the
HTTP handlers (``app``). Start it with ``python -m streamer`` or ``herald streamer``;
``__main__`` patches the standard library with gevent before anything else is imported.
"""
