"""NetworkConfig validation: bad values raise ConfigError naming the option and its range."""

import ipaddress

import pytest

from ringnet import ConfigError, NetworkConfig, default_workers


def test_defaults_follow_slirp4netns():
    cfg = NetworkConfig()
    a = cfg.addresses()
    assert str(a["guest4"]) == "10.0.2.100"
    assert str(a["gateway4"]) == "10.0.2.2"
    assert str(a["dns4"]) == "10.0.2.3"
    assert a["guest6"] == ipaddress.ip_address("fd00::100")
    assert a["gateway6"] == ipaddress.ip_address("fd00::2")
    assert a["dns6"] == ipaddress.ip_address("fd00::3")
    assert cfg.mtu == 65520
    assert cfg.workers == default_workers() >= 1


@pytest.mark.parametrize("mtu", [1279, 65521, 0, -1, "1500", 1500.0, True])
def test_mtu_out_of_range_names_option_and_range(mtu):
    with pytest.raises(ConfigError, match=r"mtu=.*1280 to 65520"):
        NetworkConfig(mtu=mtu)


@pytest.mark.parametrize("mtu", [1280, 1500, 9000, 65520])
def test_mtu_in_range(mtu):
    assert NetworkConfig(mtu=mtu).mtu == mtu


@pytest.mark.parametrize("workers", [0, -3, 65, "2"])
def test_workers_out_of_range(workers):
    with pytest.raises(ConfigError, match=r"workers=.*1 to 64"):
        NetworkConfig(workers=workers)


@pytest.mark.parametrize("cidr", ["10.0.2.0/33", "10.0.2.1/24", "banana", "fd00::/64", "10.0.2.0/31"])
def test_malformed_cidr4(cidr):
    with pytest.raises(ConfigError, match="cidr4"):
        NetworkConfig(cidr4=cidr)


@pytest.mark.parametrize("cidr", ["127.0.0.0/24", "224.1.0.0/16", "0.0.0.0/24"])
def test_cidr4_overlapping_reserved_ranges(cidr):
    with pytest.raises(ConfigError, match="overlaps"):
        NetworkConfig(cidr4=cidr)


@pytest.mark.parametrize("cidr", ["fe80::/64", "ff02::/64", "::/120", "10.0.0.0/24", "fd00::1/64"])
def test_bad_cidr6(cidr):
    with pytest.raises(ConfigError, match="cidr6"):
        NetworkConfig(cidr6=cidr)


def test_ipv6_off_skips_ipv6_checks():
    cfg = NetworkConfig(ipv6=False, cidr6="not a network")
    assert "guest6" not in cfg.addresses()


def test_addresses_outside_subnet_or_colliding():
    with pytest.raises(ConfigError, match="gateway4=10.0.3.2 is outside"):
        NetworkConfig(gateway4="10.0.3.2")
    with pytest.raises(ConfigError, match="guest4 and gateway4 are both"):
        NetworkConfig(guest4="10.0.2.2")
    with pytest.raises(ConfigError, match="network or broadcast"):
        NetworkConfig(dns4="10.0.2.255")
    with pytest.raises(ConfigError, match="has no default"):
        NetworkConfig(cidr4="10.0.2.0/26")
    cfg = NetworkConfig(cidr4="192.168.77.0/26", guest4="192.168.77.10")
    assert str(cfg.addresses()["gateway4"]) == "192.168.77.2"


def test_custom_subnet():
    cfg = NetworkConfig(cidr4="172.30.0.0/16", cidr6="fd12:3456::/64")
    a = cfg.addresses()
    assert str(a["guest4"]) == "172.30.0.100" and str(a["gateway6"]) == "fd12:3456::2"


@pytest.mark.parametrize("size", [1000, 256 * 1024, 3 * 1024 * 1024, 512 * 1024 * 1024])
def test_ring_size(size):
    with pytest.raises(ConfigError, match="ring_size"):
        NetworkConfig(ring_size=size)


@pytest.mark.parametrize("name", ["", "a" * 16, "has space", "a/b", ".."])
def test_ifname(name):
    with pytest.raises(ConfigError, match="ifname"):
        NetworkConfig(ifname=name)


def test_frozen():
    cfg = NetworkConfig()
    with pytest.raises(Exception):
        cfg.mtu = 1500


def test_txqueuelen_grows_when_mtu_shrinks():
    assert NetworkConfig(mtu=1500).txqueuelen() > NetworkConfig(mtu=65520).txqueuelen() >= 1000


@pytest.mark.parametrize("option", ["coalesce_us", "busy_poll_us"])
@pytest.mark.parametrize("us", [-1, 1001, "200", 2.5])
def test_microsecond_option_out_of_range_names_option_and_range(option, us):
    with pytest.raises(ConfigError, match=rf"{option}=.*0 to 1000"):
        NetworkConfig(**{option: us})


@pytest.mark.parametrize("option", ["coalesce_us", "busy_poll_us"])
@pytest.mark.parametrize("us", [0, 1, 200, 1000])
def test_microsecond_option_in_range(option, us):
    assert getattr(NetworkConfig(**{option: us}), option) == us
