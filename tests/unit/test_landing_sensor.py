"""The landing-zone sensor over files it cannot read: one such file (a partner's upload it may not read yet, a
file removed while the tick runs) is left for a later tick, and every other file still gets its run."""

import json

from dagster import AssetKey, SensorResult, build_sensor_context

from pipelines.jobs import landing_ingest_job
from resources.landing_zone import LandingFile, LandingZoneResource
from sensors.landing import build_landing_sensor

SOURCES = {"partner_quotes": AssetKey(["bronze", "partner_quotes"]), "kyc_events": AssetKey(["bronze", "kyc_events"])}


def tick(zone, cursor=None):
    sensor = build_landing_sensor(landing_ingest_job, SOURCES, [AssetKey(["quarantine", "landing"])])
    with build_sensor_context(cursor=cursor, resources={"landing_zone": zone}) as context:
        result = sensor(context)
    assert isinstance(result, SensorResult)
    return [r.tags["platformq/landing_file"] for r in result.run_requests or []], json.loads(result.cursor)


def test_a_file_that_cannot_be_read_does_not_hold_back_the_others(tmp_path, monkeypatch):
    for relpath in ("kyc_events/k.jsonl", "partner_quotes/a.csv", "partner_quotes/b.csv"):
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_text("symbol,price\nAAA,1.5\n")
    zone = LandingZoneResource(root=str(tmp_path), sources=list(SOURCES))
    real_sha256 = LandingFile.sha256

    def sha256(self):
        if self.name == "a.csv":  # uploaded by another user with mode 0600 (the test runs as root: simulated)
            raise PermissionError(13, "Permission denied", str(self.path))
        return real_sha256(self)

    monkeypatch.setattr(LandingFile, "sha256", sha256)
    requested, cursor = tick(zone)
    assert sorted(requested) == ["kyc_events/k.jsonl", "partner_quotes/b.csv"]
    assert "partner_quotes/a.csv" not in cursor  # still new to the next tick
    monkeypatch.setattr(LandingFile, "sha256", real_sha256)  # the partner fixes the mode
    assert tick(zone, json.dumps(cursor))[0] == ["partner_quotes/a.csv"]
    # a file removed between the listing and its stat or hash is passed over, not an error
    gone = tmp_path / "partner_quotes" / "c.csv"
    gone.write_text("x\n")
    real_list = LandingZoneResource.list_files

    def list_then_remove(self, misnamed=None):
        files = real_list(self, misnamed)
        gone.unlink()
        return files

    monkeypatch.setattr(LandingZoneResource, "list_files", list_then_remove)
    requested, _ = tick(zone, json.dumps(cursor))
    assert requested == ["partner_quotes/a.csv"]
