"""Where run failures are reported: a webhook (Slack-, Teams- or PagerDuty-style JSON POST)."""

from dagster import ConfigurableResource


class AlertsResource(ConfigurableResource):
    webhook_url: str | None = None  # no URL: failures are only recorded in the lake
    timeout_s: float = 5.0
    attempts: int = 3

    def post(self, payload: dict) -> bool:
        """POST the payload; True when the webhook accepted it. Never raises (alerting must not fail runs)."""
        status = self.send(payload)
        return status is not None and status < 300

    def send(self, payload: dict) -> int | None:
        """POST the payload; the webhook's last HTTP status (None: no webhook, or no answer after every attempt).
        A refusal that another attempt would not change (a 4xx other than 408 and 429) is not sent again."""
        if not self.webhook_url:
            return None
        import time

        import httpx

        status = None
        for attempt in range(self.attempts):
            try:
                status = httpx.post(self.webhook_url, json=payload, timeout=self.timeout_s).status_code
                if status < 300 or (status < 500 and not transient(status)):
                    return status
            except httpx.HTTPError:
                pass
            time.sleep(0.2 * 2**attempt)
        return status


def transient(status: int | None) -> bool:
    """A webhook answer another attempt may change: none at all, a 5xx, 408 or 429 (also a redirect's 3xx is not)."""
    return status is None or status >= 500 or status in (408, 429)
