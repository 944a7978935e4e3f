"""Rate limits shared through Redis: every process behind one address draws on one bucket per key (a real
redis-server on loopback); without Redis each process limits on its own."""

import logging
import time

import pytest

from services.common.auth import RedisRateLimiter
from tests.integration.servers import redis_server
from tests.ports import free_port


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


def test_two_processes_draw_on_one_bucket_per_key(redis_url):
    first = RedisRateLimiter(redis_url, rate=0.01, burst=3, prefix="t1")
    second = RedisRateLimiter(redis_url, rate=0.01, burst=3, prefix="t1")  # another worker, another host
    assert [first.allow("ann")[0], second.allow("ann")[0], first.allow("ann")[0]] == [True, True, True]
    allowed, wait = second.allow("ann")
    assert not allowed and 99 < wait <= 100  # one token per 100 s at 0.01/s
    assert first.allow("bob") == (True, 0.0)  # every key its own bucket
    assert RedisRateLimiter(redis_url, rate=0.01, burst=3, prefix="other-service").allow("ann")[0]


def test_a_bucket_refills_at_the_rate(redis_url):
    limiter = RedisRateLimiter(redis_url, rate=20, burst=1, prefix="refill")
    assert limiter.allow("ann")[0] and not limiter.allow("ann")[0]
    time.sleep(0.08)
    assert limiter.allow("ann")[0]


def test_without_redis_each_process_limits_on_its_own(caplog):
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", rate=0.01, burst=2, prefix="down")
    with caplog.at_level(logging.WARNING, logger="platformq.ratelimit"):
        results = [limiter.allow("ann")[0] for _ in range(3)]
    assert results == [True, True, False]  # this process's own bucket still limits
    warnings = [r.getMessage() for r in caplog.records if r.name == "platformq.ratelimit"]
    assert len(warnings) == 1 and "Redis is unreachable" in warnings[0]


def test_many_threads_meeting_an_outage_log_it_once(caplog):
    import threading

    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", rate=100.0, burst=100, prefix="down")
    start = threading.Barrier(8)

    def requests():
        start.wait()
        for _ in range(10):
            limiter.allow("ann")

    with caplog.at_level(logging.WARNING, logger="platformq.ratelimit"):
        threads = [threading.Thread(target=requests) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    warnings = [r.getMessage() for r in caplog.records if r.name == "platformq.ratelimit"]
    assert len(warnings) == 1 and "Redis is unreachable" in warnings[0]


def test_an_unanswering_redis_is_not_waited_for_on_every_request():
    """A Redis that takes connections but does not answer (a hung server, a host whose traffic is dropped): every
    request waited out the 0.5 s socket timeout before falling back, so an outage added half a second to each
    request and capped a service at a couple of requests per second per thread. After a failure the process's
    own buckets are used for RETRY_S before Redis is tried again."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # connections complete in the kernel; nothing ever answers them
    try:
        limiter = RedisRateLimiter(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", rate=0.01, burst=3,
                                   prefix="hung")
        limiter.RETRY_S = 0.5
        started = time.monotonic()
        results = [limiter.allow("ann")[0] for _ in range(8)]
        elapsed = time.monotonic() - started
        assert results == [True, True, True] + [False] * 5  # limited by the process's own bucket meanwhile
        assert elapsed < 1.5, f"{elapsed:.1f} s for 8 requests"
        time.sleep(0.5)  # the interval is over: Redis is asked again
        started = time.monotonic()
        assert limiter.allow("bob")[0] and time.monotonic() - started >= 0.4
    finally:
        listener.close()
