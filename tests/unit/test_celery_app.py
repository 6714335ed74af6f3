"""Celery apps built from a Config: their settings, broker and services (no network)."""

from __future__ import annotations

import pytest

from herald import config as herald_config
from herald.keys import Keys
from tasks.factory import HeraldCelery, make_celery, services_of
from tasks.notifications import SEND_NOTIFICATION


@pytest.fixture
def cfg(tmp_path):
    return herald_config.load({"HERALD_HOME": str(tmp_path), "HERALD_PREFIX": "acme",
                               "REDIS_URL": "redis://data.example:6379/3",
                               "CELERY_BROKER_URL": "redis://broker.example:6379/4",
                               "HERALD_TASK_TIME_LIMIT": "100"})


def test_the_app_uses_its_configs_broker_whatever_the_environment_says(cfg, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://elsewhere.example:6379/9")
    app = make_celery(cfg)
    for connection in (app.connection_for_write(), app.connection_for_read()):
        assert (connection.hostname, connection.virtual_host) == ("broker.example", "4")


def test_the_apps_names_follow_the_prefix_and_its_limits_the_config(cfg):
    conf = make_celery(cfg).conf
    keys = Keys("acme")
    assert conf.task_default_queue == keys.task_queue
    assert conf.control_exchange == keys.control_exchange
    assert conf.broker_transport_options["global_keyprefix"] == keys.broker_keyprefix
    assert conf.broker_transport_options["visibility_timeout"] == cfg.visibility_timeout
    assert (conf.task_time_limit, conf.task_soft_time_limit) == (100, 90)
    assert conf.task_acks_late and conf.task_retry_on_worker_lost


def test_a_rabbitmq_broker_confirms_publishing(cfg):
    conf = make_celery(cfg.replace(broker_url="amqp://guest:guest@rabbit:5672//")).conf
    assert conf.broker_transport_options == {"confirm_publish": True}


def test_an_app_reads_its_config_only_when_it_needs_it():
    calls = []

    def source():
        calls.append(1)
        raise RuntimeError("read")

    app = HeraldCelery(source)
    assert calls == []
    with pytest.raises(RuntimeError, match="read"):
        app.conf.task_default_queue  # noqa: B018
    assert calls == [1]


def test_tasks_get_the_services_of_their_own_app(cfg):
    first, second = make_celery(cfg), make_celery(cfg.replace(prefix="other"))
    task = first.tasks[SEND_NOTIFICATION]
    assert services_of(task) is first.services
    assert services_of(second.tasks[SEND_NOTIFICATION]).keys.prefix == "other"
