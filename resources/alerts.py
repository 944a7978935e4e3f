"""Where run failures are reported: a webhook (Slack-, Teams- or PagerDuty-style JSON POST)."""

from dagster import ConfigurableResource


class AlertsResource(ConfigurableResource):
    webhook_url: str | None = None  # no URL: failures are only recorded in the lake
    timeout_s: float = 5.0
    attempts: int = 3

    def post(self, payload: dict) -> bool:
        """POST the payload; True when the webhook accepted it. Never raises (alerting must not fail runs)."""
        if not self.webhook_url:
            return False
        import time

        import httpx

        for attempt in range(self.attempts):
            try:
                response = httpx.post(self.webhook_url, json=payload, timeout=self.timeout_s)
                if response.status_code < 300:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2 * 2**attempt)
        return False
