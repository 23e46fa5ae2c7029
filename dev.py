"""One command for each job on a fresh machine: `python3 dev.py demo` runs the site, `python3 dev.py test` the tests.

It makes a virtual environment in .venv (once, and again when a requirements file changes),
then runs the demo or pytest inside it. Only the standard library is used here, so it works
before anything is installed, on Linux, macOS and Windows.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv(requirements: str) -> None:
    """Create .venv and install a requirements file into it, unless that exact file is installed already."""
    files = [ROOT / "requirements.txt", ROOT / requirements]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    stamp = VENV / f".installed-{requirements}-{digest}"
    if stamp.exists() and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"dev.py: installing {requirements}", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(ROOT / requirements)], check=True)
    for old in VENV.glob(f".installed-{requirements}-*"):
        old.unlink()
    stamp.touch()


def main(argv: list[str]) -> int:
    """Run `demo [app.py options]` or `test [pytest options]`."""
    if not argv or argv[0] not in ("demo", "test"):
        print("usage: python3 dev.py demo [--port N]   |   python3 dev.py test [pytest options]")
        return 2
    if argv[0] == "demo":
        ensure_venv("requirements.txt")
        command = [str(PYTHON), str(ROOT / "app.py"), "--demo", *argv[1:]]
    else:
        ensure_venv("requirements-dev.txt")
        command = [str(PYTHON), "-m", "pytest", *argv[1:]]
    try:
        return subprocess.run(command, cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
