"""The load generator (bench/mixed_load.py) sends requests to this machine only: loopback or an address one of its
interfaces holds (the real Kubernetes node's bridge), never a name it would have to look up or another host."""

import pytest

from bench.mixed_load import on_this_machine, run


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1"])
def test_loopback_is_this_machine(host):
    assert on_this_machine(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "192.0.2.254", "2001:db8::1", "example.com", "", "127.0.0.1.nip.io"])
def test_other_hosts_and_names_are_not(host):
    assert not on_this_machine(host)


def test_the_load_refuses_another_host_before_sending_anything():
    with pytest.raises(SystemExit, match="refusing to send load to '8.8.8.8': only to this machine"):
        run("http://8.8.8.8:80/", keepalive_clients=1, new_clients=1, rps=1, max_seconds=1, stop_file=None)
