"""Caption files: a list of ``(video path, captions)`` records.

Formats (paths relative to the caption file's folder unless absolute, or to ``root`` when given):

- CSV with a header row holding the columns ``path`` and ``caption`` (an optional ``fps`` column
  gives the frame rate of frame folders);
- JSONL, one object per line: ``{"path": ..., "caption": "..." | ["...", ...], "fps": 24}``.

Several rows for one path merge into one record with several captions (one is drawn per sample).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["VideoRecord", "read_caption_file", "write_caption_jsonl"]


@dataclass(frozen=True)
class VideoRecord:
    """One video: ``path`` (file or frame folder), its ``captions`` (>= 1), optional ``fps`` for frame folders."""

    path: str
    captions: Tuple[str, ...]
    fps: Optional[float] = None
    meta: Dict[str, str] = field(default_factory=dict, compare=False)


def _merge(rows: List[Tuple[str, List[str], Optional[float]]]) -> List[VideoRecord]:
    order: List[str] = []
    caps: Dict[str, List[str]] = {}
    fps: Dict[str, Optional[float]] = {}
    for path, captions, f in rows:
        if path not in caps:
            order.append(path)
            caps[path] = []
            fps[path] = f
        caps[path].extend(captions)
    return [VideoRecord(p, tuple(caps[p]), fps[p]) for p in order]


def read_caption_file(path: str, root: Optional[str] = None) -> List[VideoRecord]:
    """Read a ``.csv`` or ``.jsonl`` caption file into records (see the module doc for the format).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the line for a bad
    row (missing column, empty caption, bad JSON).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"caption file {path!r} does not exist")
    base = root if root is not None else os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1].lower()
    rows: List[Tuple[str, List[str], Optional[float]]] = []

    def add(lineno: int, p, cap, f) -> None:
        if not p:
            raise ValueError(f"{path}:{lineno}: empty 'path'")
        caps = [cap] if isinstance(cap, str) else list(cap or [])
        if not caps or any(not isinstance(c, str) for c in caps):
            raise ValueError(f"{path}:{lineno}: 'caption' must be a string or a list of strings")
        fps = float(f) if f not in (None, "") else None
        rows.append((p if os.path.isabs(p) else os.path.join(base, p), caps, fps))

    if ext == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "caption"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: CSV header must name the columns 'path' and 'caption' "
                                 f"(missing {sorted(missing)}; header is {reader.fieldnames})")
            for i, row in enumerate(reader, start=2):
                add(i, row["path"], row["caption"], row.get("fps"))
    elif ext in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i}: not valid JSON ({exc})") from exc
                if not isinstance(obj, dict) or "path" not in obj or "caption" not in obj:
                    raise ValueError(f"{path}:{i}: each line must be an object with 'path' and 'caption'")
                add(i, obj["path"], obj["caption"], obj.get("fps"))
    else:
        raise ValueError(f"caption file {path!r}: extension must be .csv or .jsonl")
    return _merge(rows)


def write_caption_jsonl(records: List[VideoRecord], path: str, relative_to: Optional[str] = None) -> str:
    """Write records as a JSONL caption file (paths relative to ``relative_to``, default the file's folder)."""
    base = relative_to or os.path.dirname(os.path.abspath(path))
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            obj = {"path": os.path.relpath(r.path, base),
                   "caption": r.captions[0] if len(r.captions) == 1 else list(r.captions)}
            if r.fps is not None:
                obj["fps"] = r.fps
            fh.write(json.dumps(obj) + "\n")
    return path
