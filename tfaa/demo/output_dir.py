"""The demo's output folder rules: writable, never clobbered unless asked, resumable.

A demo folder holds ``tfaa_demo.json`` (the settings and the finished stages). Without
``resume``/``overwrite`` a non-empty folder is refused; ``overwrite`` empties only a folder that
holds a demo (or is empty); ``resume`` needs the same settings as the run that made it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

__all__ = ["MARKER", "DemoOutputError", "prepare_output_dir", "read_state", "write_state"]

MARKER = "tfaa_demo.json"


class DemoOutputError(RuntimeError):
    """The output folder cannot be used as asked; the message names ``--out`` and the rule."""


def _check_writable(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=out_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise DemoOutputError(f"--out {out_dir!r} is not writable ({err.strerror or err}); "
                              "choose a folder you can write to") from None


def read_state(out_dir: str) -> Optional[dict]:
    """The content of ``tfaa_demo.json`` in ``out_dir``, or None when there is none."""
    path = os.path.join(out_dir, MARKER)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_state(out_dir: str, state: dict) -> None:
    """Write ``tfaa_demo.json`` atomically (a crash leaves the previous version)."""
    tmp = os.path.join(out_dir, MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, os.path.join(out_dir, MARKER))


def prepare_output_dir(out_dir: str, config: dict, resume: bool = False, overwrite: bool = False) -> dict:
    """Check and prepare ``out_dir``; returns the run state ``{"config": ..., "stages": {...}}``.

    Raises :class:`DemoOutputError` when the folder is not writable, is not empty and neither
    ``resume`` nor ``overwrite`` is set, both are set, ``overwrite`` would delete a folder that is
    not a demo folder, or ``resume`` finds other settings than ``config``.
    """
    if resume and overwrite:
        raise DemoOutputError("--resume and --overwrite exclude each other; pass one of them")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DemoOutputError(f"--out {out_dir!r} is not writable: it is a file, not a folder")
    _check_writable(out_dir)
    entries = [e for e in os.listdir(out_dir) if not e.startswith(".write_probe_")]
    state = read_state(out_dir)
    if entries and not (resume or overwrite):
        raise DemoOutputError(f"--out {out_dir!r} is not empty; pass --resume to reuse its finished stages, "
                              "--overwrite to delete it and start fresh, or choose another folder")
    if entries and state is None:
        raise DemoOutputError(f"--out {out_dir!r} is not empty and holds no {MARKER}, so it is not a tfaa demo "
                              "folder; --resume/--overwrite act only on demo folders (choose an empty folder)")
    if overwrite:
        for entry in entries:
            path = os.path.join(out_dir, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        state = None
    if state is not None:
        old = state.get("config", {})
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            raise DemoOutputError(f"--resume: the settings differ from the run in {out_dir!r} ({', '.join(changed)}); "
                                  "rerun with the same settings or pass --overwrite")
        return state
    state = {"config": config, "stages": {}}
    write_state(out_dir, state)
    return state
