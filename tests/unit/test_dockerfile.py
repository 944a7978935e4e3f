"""infra/Dockerfile and .dockerignore. No Docker engine here: the files are parsed, and what a build would do
with them (which host files reach `COPY . .`, which dbt target the image parses) is checked against the
repository and dbt itself."""

import os
import re
import shlex
import subprocess

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "infra" / "Dockerfile"


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax (moby/patternmatcher): `**` spans folders, `*` and `?` stay within one name."""
    pattern = os.path.normpath(pattern).lstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or one of its parent folders
    decides (a `!` pattern takes it back in)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _regex(pattern[1:] if negate else pattern)
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


def test_the_matcher_follows_dockers_rules():
    assert excluded(".venv-chain/bin/python", [".venv-*"])
    assert not excluded("models/.venv-chain", [".venv-*"])  # no `**/`: the context root only
    assert excluded("a/b/key.pem", ["**/*.pem"]) and excluded("key.pem", ["**/*.pem"])
    assert not excluded("dbt/target/x", ["dbt/target", "!dbt/target"])


SECRET_AND_LOCAL = [
    ".venv/bin/python", ".venv-chain/bin/python", ".venv-lava/bin/python", ".venv-airflow/bin/python",
    ".test-chain/hardhat.config.js",
    ".platformq/api-keys.json", ".platformq/jwt-signing-key.pem", ".platformq/catalog.db",
    ".platformq/dagster.yaml", ".platformq/services/trading.sqlite",
    "dbt/target/manifest.json", "dbt/target/partial_parse.msgpack", "dbt/logs/dbt.log", "dbt/dbt_packages/x/a.sql",
    ".make/venv", ".git/HEAD", "data/landing/orders.csv", "platformq.egg-info/PKG-INFO",
    "models/__pycache__/x.cpython-311.pyc", ".pytest_cache/v/cache", ".hypothesis/examples/x", ".ruff_cache/x",
    "infra/production.env", ".env", "secrets/platformq-jwt.pem",
]


@pytest.mark.parametrize("path", SECRET_AND_LOCAL)
def test_local_state_and_secrets_stay_out_of_the_image(path):
    assert excluded(path, dockerignore_patterns()), path


def test_every_gitignored_artefact_is_left_out_of_the_build_context():
    patterns = dockerignore_patterns()
    for line in (ROOT / ".gitignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sample = line.rstrip("/").lstrip("/").replace("*", "x")
        # a .gitignore pattern without a slash applies in every folder
        samples = [sample, f"{sample}/f"] + ([f"pkg/{sample}", f"pkg/{sample}/f"] if "/" not in sample else [])
        for path in samples:
            assert excluded(path, patterns), f"{path} (.gitignore: {line}) would be copied into the image"


def test_no_tracked_file_is_left_out():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    patterns = dockerignore_patterns()
    dropped = [p for p in tracked.splitlines() if excluded(p, patterns)]
    assert dropped == []


def instructions(kind: str) -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # continuation lines joined
    return [line[len(kind) + 1:].strip() for line in text.splitlines() if line.startswith(kind + " ")]


def run_instructions() -> list[str]:
    return instructions("RUN")


def test_the_cpu_torch_pin_resolves_from_the_pytorch_index():
    """PyPI has no `+cpu` torch: the install of requirements/main.txt must name the PyTorch CPU index, and let
    uv look for each pin on every index (uv otherwise takes a package from the first index that has it)."""
    assert re.search(r"^torch==[\d.]+\+cpu$", (ROOT / "requirements/main.txt").read_text(), re.M)
    [install] = [r for r in run_instructions() if "requirements/main.txt" in r]
    args = shlex.split(install)
    index = args[args.index("--index") + 1] if "--index" in args else args[args.index("--extra-index-url") + 1]
    assert index == "https://download.pytorch.org/whl/cpu"
    assert args[args.index("--index-strategy") + 1] == "unsafe-best-match"


def test_no_build_step_hides_a_failure():
    for run in run_instructions():
        assert "|| true" not in run and "||" not in run, run


def test_the_image_parses_the_manifest_the_definitions_load(tmp_path):
    """The image's dbt parse runs as written in the Dockerfile (its environment assignments, its target) with
    none of PLATFORMQ_TRINO_* set, into dbt/target/ where resources/dbt.py ensure_manifest looks; the image's
    profile is production, whose default SQL engine (Trino) makes the definitions use the `production` target."""
    image_env = " ".join(instructions("ENV"))
    assert "PLATFORMQ_PROFILE=production" in image_env.split()
    [parse] = [r for r in run_instructions() if "dbt parse" in r]
    command = shlex.split(parse.split("&&")[1])  # after `cd dbt`
    assert parse.startswith("cd dbt &&")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATFORMQ_")}
    while "=" in command[0]:
        key, value = command.pop(0).split("=", 1)
        env[key] = value
    assert command[:2] == ["dbt", "parse"] and command[command.index("--target") + 1] == "production"
    assert "--target-path" not in command and "--project-dir" not in command  # dbt/target/manifest.json
    from resources.dbt import dbt_executable

    env["DBT_TARGET_PATH"], env["DBT_LOG_PATH"] = str(tmp_path / "target"), str(tmp_path / "logs")
    done = subprocess.run([dbt_executable(), *command[1:]], cwd=ROOT / "dbt", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "target" / "manifest.json").exists()
    assert "PLATFORMQ_TRINO" not in image_env  # the placeholder is the parse's alone, not the image's
