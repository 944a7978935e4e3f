"""PLATFORMQ_FEAST_REDIS_URL -> Feast's Redis connection string: the password arrives decoded, or is refused.

A URL percent-encodes the characters that would break it (``@ / : %``...); Feast's connection string is
``host:port,db=N,password=...``: comma-separated, each value read by ``json.loads`` when it parses. A password
that cannot survive that is refused with an error that does not show it (the settings never print secrets).
"""

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest

from resources.feast import redis_connection_string

PASSWORD = "p@ss/w0rd:=%1"
ENCODED = "p%40ss%2Fw0rd%3A%3D%251"
TIMEOUTS = ",socket_timeout=5,socket_connect_timeout=5,retry=null"


def test_the_password_reaches_feast_decoded():
    assert redis_connection_string(f"redis://:{ENCODED}@redis:6379/1") == f"redis:6379,db=1,password={PASSWORD}{TIMEOUTS}"
    assert redis_connection_string("rediss://:plain@redis.internal/2") == f"redis.internal:6379,db=2,password=plain,ssl=true{TIMEOUTS}"
    assert redis_connection_string("redis://127.0.0.1:6390/0") == f"127.0.0.1:6390,db=0{TIMEOUTS}"


def test_an_acl_username_reaches_feast():
    """redis://user:password@...: without the user Redis checks the password against its ``default`` user and an ACL
    user's password is refused (WRONGPASS), so the URL's user must reach Feast (which hands it to redis-py)."""
    assert redis_connection_string(f"redis://feast%2Dapp:{ENCODED}@redis:6379/1") == (
        f"redis:6379,db=1,username=feast-app,password={PASSWORD}{TIMEOUTS}")
    assert redis_connection_string("rediss://app@redis/0") == f"redis:6379,db=0,username=app,ssl=true{TIMEOUTS}"
    for encoded in ("a%2Cb", "null", "true"):
        with pytest.raises(ValueError, match="username in PLATFORMQ_FEAST_REDIS_URL") as raised:
            redis_connection_string(f"redis://{encoded}:{ENCODED}@redis:6379/0")
        assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("encoded", ["a%2Cb", "a,b", "null", "true", "1e3", "%22quoted%22", "%5B1%5D", "[1]"])
def test_a_password_feast_would_split_or_reinterpret_is_refused_without_showing_it(encoded):
    from urllib.parse import unquote

    with pytest.raises(ValueError) as raised:
        redis_connection_string(f"redis://:{encoded}@redis:6379/0")
    message = str(raised.value)
    assert "PLATFORMQ_FEAST_REDIS_URL" in message
    assert encoded not in message and unquote(encoded) not in message


@contextlib.contextmanager
def redis_with_password(password: str, user: str | None = None):
    """A private redis-server: ``password`` on the default user, or with ``user`` on that ACL user only (the default
    user disabled)."""
    from tests.integration.servers import _wait_port
    from tests.ports import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make services` (infra/scripts/test-services.sh)")
    port = free_port()
    auth = (["--user", user, "on", f">{password}", "~*", "&*", "+@all", "--user", "default", "off"] if user
            else ["--requirepass", password])
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             *auth], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server", 20)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow  # starts a redis-server
def test_feast_authenticates_to_redis_with_the_decoded_password(tmp_path):
    """A real redis-server with that password: Feast materialises into it and reads the features back."""
    import redis

    from platformq_assets.ml.features import _day_bounds
    from tests.ml.test_online_store import NEW, _feast, _online_as_of

    with redis_with_password(PASSWORD) as port:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        feast, latest = _feast(tmp_path, {"online_store": "redis", "redis_url": f"redis://:{ENCODED}@127.0.0.1:{port}/3"})
        feast.materialize(*_day_bounds(NEW), views=["instrument_intervals"])
        assert _online_as_of(feast)["AAPL"] == latest["AAPL", NEW]
        assert redis.Redis(port=port, db=3, password=PASSWORD).dbsize() > 0


@pytest.mark.slow  # starts a redis-server
def test_feast_authenticates_as_the_urls_acl_user(tmp_path):
    """A redis-server whose only user is an ACL user: Feast materialises into it as that user."""
    import redis

    from platformq_assets.ml.features import _day_bounds
    from tests.ml.test_online_store import NEW, _feast, _online_as_of

    with redis_with_password(PASSWORD, user="feast-app") as port:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password=PASSWORD).ping()  # the password alone is the default user's: disabled
        feast, latest = _feast(tmp_path, {"online_store": "redis",
                                          "redis_url": f"redis://feast-app:{ENCODED}@127.0.0.1:{port}/3"})
        feast.materialize(*_day_bounds(NEW), views=["instrument_intervals"])
        assert _online_as_of(feast)["AAPL"] == latest["AAPL", NEW]


def test_the_settings_path_gives_feast_the_decoded_password(monkeypatch, tmp_path):
    """Production settings (PLATFORMQ_FEAST_REDIS_URL) -> feast_resource -> Feast's Redis config."""
    from resources.feast import feast_resource
    from resources.settings import load_settings
    from tests.unit.test_settings import PRODUCTION_ENV

    for name, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PLATFORMQ_HOME", str(tmp_path))
    monkeypatch.setenv("PLATFORMQ_FEAST_REDIS_URL", f"redis://:{ENCODED}@redis.internal:6379/1")
    load_settings.cache_clear()
    try:
        feast = feast_resource(load_settings())
        config = feast.repo_config().online_store
    finally:
        load_settings.cache_clear()
    assert config.connection_string == f"redis.internal:6379,db=1,password={PASSWORD}{TIMEOUTS}"
    assert Path(feast.repo_path).name == "features"


@pytest.mark.slow  # 5 s of waiting on a silent server
def test_a_redis_that_takes_connections_and_never_answers_fails_the_read_in_seconds(tmp_path):
    """redis-py waits for ever by default: a hung Redis held materialisations, erasures and every serving request."""
    import socket
    import time

    from resources.feast import REDIS_TIMEOUT_S, FeastResource
    from tests.ml.test_online_store import ROOT

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes connections; nothing ever reads or answers them
    try:
        feast = FeastResource(registry_uri=f"sqlite:///{tmp_path / 'registry.db'}", online_store="redis",
                              redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                              offline_root=str(tmp_path / "offline"), repo_path=str(ROOT / "features"))
        feast.apply()
        started = time.monotonic()
        with pytest.raises(Exception) as failed:
            feast.online_features("price_direction_v1", [{"instrument": "AAPL"}])
        waited = time.monotonic() - started
        assert "imeout" in type(failed.value).__name__ + str(failed.value)
        assert REDIS_TIMEOUT_S - 1 <= waited < 3 * REDIS_TIMEOUT_S
    finally:
        silent.close()
