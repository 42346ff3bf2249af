"""The image's entry point (services/entrypoint.sh): who each service runs as.

The sandbox needs root to drop each stored-function call to a uid of its own, so the api and the
tool invoker keep root; the other services run as uid 10001 with no capabilities. The servers
are replaced by scripts on PATH that print who they run as; ``setpriv`` and ``sh`` are real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "services" / "entrypoint.sh"
REPORT = """#!/bin/sh
echo "server=$(basename "$0") uid=$(id -u) gid=$(id -g) groups=$(id -G)"
grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -s '\\t ' ' '
echo "args=$*"
"""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="dropping privileges needs root and util-linux's setpriv",
)


def _start(tmp_path: Path, service: str, *, port: str = "9191") -> subprocess.CompletedProcess[str]:
    # Not under tmp_path: pytest's base directory is 0700 root, which uid 10001 cannot enter
    # (the first version of this test saw exactly that: the drop is real).
    bin_dir = Path(tempfile.mkdtemp(prefix="entrypoint-bin-"))
    bin_dir.chmod(0o755)
    for server in ("uvicorn", "functions-framework"):
        script = bin_dir / server
        script.write_text(REPORT)
        script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SERVICE": service, "PORT": port}
    try:
        return _run(env)
    finally:
        shutil.rmtree(bin_dir, ignore_errors=True)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _fields(out: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith(("server=", "args=")):
            for part in line.split(" ") if line.startswith("server=") else [line]:
                key, _, value = part.partition("=")
                fields[key] = value
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


@needs_root
@pytest.mark.parametrize("service", ["run_executor", "handoff_broker", "context_snapshotter"])
def test_services_that_run_no_user_code_start_as_10001_without_capabilities(
    tmp_path: Path, service: str
) -> None:
    done = _start(tmp_path, service)
    assert done.returncode == 0, done.stderr
    fields = _fields(done.stdout)
    assert fields["server"] == "functions-framework"
    assert (fields["uid"], fields["gid"], fields["groups"]) == ("10001", "10001", "10001")
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"] == "1"
    assert fields["args"] == (
        f"--source services/{service}/main.py --target {service} --asgi --port 9191"
    )


@needs_root
@pytest.mark.parametrize(
    ("service", "server"), [("api", "uvicorn"), ("tool_invoker", "functions-framework")]
)
def test_the_services_that_run_stored_functions_keep_root_for_the_sandbox(
    tmp_path: Path, service: str, server: str
) -> None:
    done = _start(tmp_path, service, port="8080")
    assert done.returncode == 0, done.stderr
    fields = _fields(done.stdout)
    assert fields["server"] == server
    assert fields["uid"] == "0"
    # CAP_SETUID (bit 7) and CAP_SETGID (bit 6): what `setpriv --reuid` in the launcher needs.
    assert int(fields["CapEff"], 16) & (1 << 7 | 1 << 6) == (1 << 7 | 1 << 6)
    if service == "api":
        assert "main:asgi_app" in fields["args"] and "--port 8080" in fields["args"]


def test_an_unknown_service_is_refused_with_the_names_it_accepts(tmp_path: Path) -> None:
    done = _start(tmp_path, "runexecutor")
    assert done.returncode == 64
    assert "set SERVICE to api, run_executor, tool_invoker" in done.stderr
    assert "got 'runexecutor'" in done.stderr
    assert done.stdout == ""


def test_the_image_starts_through_the_entrypoint_as_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.split(None, 1)[0]
        for line in dockerfile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "USER" not in instructions  # the entry point decides, per service
    assert 'ENTRYPOINT ["/bin/sh", "services/entrypoint.sh"]' in dockerfile
    assert "COPY services ./services" in dockerfile
