"""The in-process token buckets: a bucket that has refilled is dropped, so a process that sees many keys keeps
only those in use; a bucket still refilling is kept, so dropping never lifts a limit."""

from services.common.auth import RateLimiter


def test_refilled_buckets_are_dropped_and_a_limit_in_force_is_kept():
    limiter = RateLimiter(rate=1.0, burst=2)
    for i in range(5000):  # one-off keys (rotated keys, short-lived tokens), one request each
        assert limiter.allow(f"one-off-{i}", now=0.0)[0]
    assert [limiter.allow("busy", now=0.0)[0] for _ in range(3)] == [True, True, False]
    assert len(limiter) == 5001  # nothing has refilled yet: nothing may go
    for i in range(4000):  # 1.5 s later the one-offs are full again (1 token + 1.5 s x 1/s), "busy" is not
        limiter.allow(f"later-{i}", now=1.5)
    assert len(limiter) == 4001  # the 5,000 refilled buckets went; without the sweep: 9,001
    # "busy" kept its half-refilled bucket: 1.5 tokens, so one request passes and the next waits
    assert limiter.allow("busy", now=1.5) == (True, 0.0)
    allowed, wait = limiter.allow("busy", now=1.5)
    assert not allowed and abs(wait - 0.5) < 1e-9
