from __future__ import annotations

from nubes import config
from nubes.service import open_transport, transport_url_for


def test_transport_url_names_each_host_of_a_fleet(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[DEFAULT]\ntransport_url = rabbit://compute.{host}:pw@127.0.0.1:5672/\n")
    conf = config.load(["--config-file", str(path)], config.new_config())
    assert transport_url_for(conf, "fake-1") == "rabbit://compute.fake-1:pw@127.0.0.1:5672/"
    # The broker user is the identity: each host of a fleet is itself.
    assert open_transport(conf, "compute", "fake-7").identity == "compute.fake-7"


def test_memory_transport_takes_the_service_identity(tmp_path):
    conf = config.load([], config.new_config())
    assert open_transport(conf, "compute", "h1").identity == "compute.h1"
