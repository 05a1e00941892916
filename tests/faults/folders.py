"""What the fault tests read back from a command and a folder: its message on one line, every file's hash."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def said(out: subprocess.CompletedProcess[str]) -> str:
    """A command's stderr as one line of single spaces (rich wraps long messages and draws boxes)."""
    return " ".join(out.stderr.replace("│", " ").split())


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file's hash but the writer lock's (a writer takes the lock before it looks inside)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name != "writer.lock"
    }
