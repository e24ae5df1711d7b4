"""A backup folder on disk: its `manifest.json`, and the SHA-256 of every file the manifest lists.

The manifest is written last, so a folder without one is an interrupted backup. `verify` refuses a
folder whose manifest is missing or unreadable, a listed file that is missing, or one whose checksum
differs (corrupted or edited); restore runs it first.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "corral-backup/1"
CONFIG_FILE = "config.yaml"
MODELS_FILE = "models.json"


class BackupInvalid(Exception):
    """The backup folder cannot be trusted; `problems` names each file and what is wrong with it."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"backup {folder} is not usable:\n" + "\n".join(f"  {p}" for p in problems))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(folder: Path) -> list[str]:
    """Every file under `folder` but the manifest, as POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def private_folder(folder: Path) -> None:
    """Create `folder` (empty or new) readable by its owner only: a backup holds key hashes and the config's
    secrets."""
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty; choose a new folder for the backup")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the checksums of every file in `folder` to `manifest` and write it, last."""
    out = {"format": FORMAT, **manifest, "files": {name: sha256_file(folder / name) for name in listed_files(folder)}}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(folder / MANIFEST)
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o600)
    return out


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BackupInvalid(folder, [f"{folder}: no such folder"])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupInvalid(folder, [f"{MANIFEST}: missing (an interrupted or foreign backup)"]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupInvalid(folder, [f"{MANIFEST}: unreadable ({exc})"]) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        raise BackupInvalid(folder, [f"{MANIFEST}: not a {FORMAT} manifest"])
    return data


def verify(folder: Path) -> dict[str, Any]:
    """The manifest of a backup whose every listed file is present and intact; BackupInvalid otherwise."""
    manifest = read_manifest(folder)
    problems: list[str] = []
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            problems.append(f"{name}: a path outside the backup")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name}: SHA-256 differs from the manifest (corrupted or changed)")
    if problems:
        raise BackupInvalid(folder, problems)
    return manifest
