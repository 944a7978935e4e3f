"""A lava-side script that hangs, as a stuck Lava simulation does: it forks a child (Lava's runtime runs a process
per Lava process), reports both process ids, and both wait for ever."""

import os
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        child = os.fork()
        if child == 0:
            while True:
                time.sleep(1)
        Path(pipes.extras["pids"]).write_text(f"{os.getpid()} {child}")
        pipes.log.info("hanging")
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()
