"""Entry point: ``python -m streamer``. gevent's monkey-patching must come first."""

from gevent import monkey

monkey.patch_all()

from streamer.server import main  # noqa: E402

if __name__ == "__main__":
    main()
