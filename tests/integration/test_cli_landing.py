"""`platformq ingest-landing` over a landing file it cannot read: the other files are ingested, the file is named and
left for the next pass, and the command exits non-zero (as the landing sensor passes over such a file and retries it)."""

import pytest
from click.testing import CliRunner

from resources.landing_zone import LandingFile, LandingZoneResource
from tests.integration.helpers import drop

pytestmark = pytest.mark.slow


def test_a_file_that_cannot_be_read_does_not_stop_the_others(settings, lake, monkeypatch):
    from platformq_assets.cli import main

    drop(settings, "partner_quotes/a.csv", b"symbol,price\nAAA,1.5\n")
    drop(settings, "partner_quotes/b.csv", b"symbol,price\nBBB,2.5\n")
    drop(settings, "kyc_events/k.jsonl", b'{"account_id": 1, "event": "opened"}\n')
    real_sha256 = LandingFile.sha256

    def sha256(self):
        if self.name == "a.csv":  # another user's upload with mode 0600 (the tests run as root: simulated)
            raise PermissionError(13, "Permission denied", str(self.path))
        return real_sha256(self)

    monkeypatch.setattr(LandingFile, "sha256", sha256)
    result = CliRunner().invoke(main, ["ingest-landing"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "not read, left for the next pass: partner_quotes/a.csv (PermissionError: Permission denied)" in result.output
    assert "Ingested 2 file(s)" in result.output and "could not be read" in result.output
    assert lake.read("bronze.partner_quotes").column("symbol").to_pylist() == ["BBB"]
    assert lake.read("bronze.kyc_events").num_rows == 1

    monkeypatch.setattr(LandingFile, "sha256", real_sha256)  # the mode is fixed: the next pass takes it
    again = CliRunner().invoke(main, ["ingest-landing"])
    assert again.exit_code == 0 and "Ingested 1 file(s)" in again.output, again.output
    assert sorted(lake.read("bronze.partner_quotes").column("symbol").to_pylist()) == ["AAA", "BBB"]


def test_only_unreadable_files_pending_is_not_no_new_files(settings, lake, monkeypatch):
    from platformq_assets.cli import main

    drop(settings, "partner_quotes/a.csv", b"symbol,price\nAAA,1.5\n")
    real_list = LandingZoneResource.list_files

    def list_then_remove(self, misnamed=None):  # removed between the listing and its hash
        files = real_list(self, misnamed)
        (settings.landing_dir / "partner_quotes" / "a.csv").unlink(missing_ok=True)
        return files

    monkeypatch.setattr(LandingZoneResource, "list_files", list_then_remove)
    result = CliRunner().invoke(main, ["ingest-landing"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "partner_quotes/a.csv (FileNotFoundError" in result.output
    assert "No new landing files." not in result.output
