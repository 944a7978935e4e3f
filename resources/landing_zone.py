"""The landing zone: folders of files dropped by other systems, one folder per source."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from dagster import ConfigurableResource

# Writers drop a file under a temporary name and rename it when complete.
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


@dataclasses.dataclass(frozen=True)
class LandingFile:
    source: str
    relpath: str  # "<source>/<name>", relative to the landing root
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def fingerprint(self) -> str:
        # ctime and inode as well as size and mtime: tools that keep the sender's mtime (rsync -t, cp -p,
        # tar) can replace a file with new bytes of the same size, but every write or rename sets ctime.
        stat = self.path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


# How many bytes of new files one sensor tick hashes: a tick must end well inside Dagster's sensor timeout
# (60 s), whatever lands at once; the files past the budget are hashed by the next ticks.
HASH_BUDGET_BYTES = 1 << 30


class LandingZoneResource(ConfigurableResource):
    root: str
    sources: list[str]
    hash_budget_bytes: int = HASH_BUDGET_BYTES

    def list_files(self, misnamed: list[str] | None = None) -> list[LandingFile]:
        """Every complete file in the source folders, in a stable order. A file whose name is not UTF-8 (bytes
        Python keeps as surrogate escapes) is left where it is and named in ``misnamed``: its name could be stored
        nowhere (the run's tags, the ledger, the quarantine), and its run would fail on every retry."""
        out = []
        for source in self.sources:
            folder = Path(self.root) / source
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith(".") and not path.name.endswith(IGNORED_SUFFIXES):
                    try:
                        path.name.encode("utf-8")
                    except UnicodeEncodeError:
                        if misnamed is not None:
                            misnamed.append(f"{source}/{path.name.encode('utf-8', 'backslashreplace').decode()}")
                        continue
                    out.append(LandingFile(source, f"{source}/{path.name}", path))
        return out
