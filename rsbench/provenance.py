"""What every run records about where it came from: versions, git commit, device, command line."""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from rsbench.store.redaction import redact_command


def auto_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA when present, else CPU."""
    if requested:
        from rsbench.errors import RsbenchError

        try:
            device = torch.device(requested)
        except RuntimeError:
            raise RsbenchError(f"unknown device {requested!r}", "use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RsbenchError(f"device {requested!r} requested but CUDA is not available", "use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("rsbench", "torch", "torchvision", "timm", "numpy", "scipy", "statsmodels"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.cache
def git_commit() -> str | None:
    """The commit of the rsbench source tree when it is a git checkout (editable installs), else None."""
    source = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "device": device_name(device) if device is not None else None,
        "host": platform.node(),
        "command": redact_command(sys.argv),  # no password of a store URL is ever recorded
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (a checkpoint's identity in the store)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
