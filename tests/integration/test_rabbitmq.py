"""The same path with RabbitMQ as the Celery broker (amqp://guest:guest@127.0.0.1:5672)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, start_worker

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
pytestmark = pytest.mark.usefixtures("clean")


def _rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbitmq_answers(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_notification_delivered_through_rabbitmq(subscribe, config, child_env):
    env = {**child_env, "CELERY_BROKER_URL": AMQP}
    alice = subscribe("alice")
    worker = start_worker(env, name="rabbit-worker")
    try:
        script = (
            "from herald import config, services\n"
            "from herald.notifications import NewNotification\n"
            "from tasks.factory import make_celery\n"
            "from tasks.notifications import submit\n"
            "cfg = config.load()\n"
            "app = make_celery(cfg)\n"
            "assert app.conf.broker_url.startswith('amqp://'), app.conf.broker_url\n"
            "print(submit(services.build(cfg), app,"
            " NewNotification(title='via RabbitMQ', recipients=['alice'])).id)\n"
        )
        sent = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        events = alice.wait_for(1, timeout=10)
        assert events, f"nothing delivered; worker log:\n{worker.log()}"
        assert events[0].json()["data"]["id"] == sent.stdout.strip()
        assert "amqp://guest:**@127.0.0.1:5672" in worker.log()
    finally:
        worker.stop()
