"""Readers for the two datasets of the thesis (ch. 4.2), producing :class:`VideoRecord` lists.

- UCF-101: ``root/<ClassName>/v_<ClassName>_gXX_cYY.avi``; the caption is the class name split
  at CamelCase boundaries and lower-cased ("ApplyEyeMakeup" -> "apply eye makeup"), the prompt
  the thesis uses for its zero-shot UCF-101 evaluation. An optional official split list
  (``trainlist01.txt``: ``ClassName/v_....avi [label]`` per line) selects the videos.
- MSR-VTT: the annotation JSON (``train_val_videodatainfo.json`` / ``test_videodatainfo.json``:
  ``{"videos": [{"video_id", "split"}], "sentences": [{"video_id", "caption"}]}``) and the folder
  of ``<video_id>.mp4`` files; each video keeps all its ~20 captions (one drawn per sample).
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional

from .records import VideoRecord
from .video_io import VIDEO_EXTENSIONS

__all__ = ["camel_case_to_caption", "ucf101_records", "msrvtt_records"]

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def camel_case_to_caption(name: str) -> str:
    """``"ApplyEyeMakeup"`` -> ``"apply eye makeup"``; ``"YoYo"`` -> ``"yo yo"``; ``"PlayingDaf"`` ->
    ``"playing daf"``; underscores also separate words."""
    words = _CAMEL.findall(name.replace("_", " "))
    return " ".join(w.lower() for w in words)


def ucf101_records(root: str, split_file: Optional[str] = None) -> List[VideoRecord]:
    """Records of a UCF-101 tree (class folders of videos), optionally only those in ``split_file``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"UCF-101 root {root!r} is not a directory")
    if split_file is not None:
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"UCF-101 split file {split_file!r} does not exist")
        rels = []
        with open(split_file, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rels.append(line.split()[0])
    else:
        rels = []
        for cls in sorted(os.listdir(root)):
            d = os.path.join(root, cls)
            if os.path.isdir(d):
                rels.extend(f"{cls}/{n}" for n in sorted(os.listdir(d))
                            if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS + (".gif",))
    records = []
    for rel in rels:
        cls = rel.replace("\\", "/").split("/")[0]
        records.append(VideoRecord(os.path.join(root, rel), (camel_case_to_caption(cls),),
                                   meta={"class": cls}))
    return records


def _find_video(video_dir: str, video_id: str) -> str:
    for ext in VIDEO_EXTENSIONS:
        p = os.path.join(video_dir, video_id + ext)
        if os.path.exists(p):
            return p
    return os.path.join(video_dir, video_id + ".mp4")  # missing: the dataset reports it as unreadable


def msrvtt_records(annotation_json: str, video_dir: str, split: Optional[str] = None) -> List[VideoRecord]:
    """Records of MSR-VTT from its annotation JSON; ``split`` ("train", "validate", "test") filters
    on the ``videos[].split`` field when given."""
    if not os.path.isfile(annotation_json):
        raise FileNotFoundError(f"MSR-VTT annotation file {annotation_json!r} does not exist")
    if not os.path.isdir(video_dir):
        raise FileNotFoundError(f"MSR-VTT video folder {video_dir!r} is not a directory")
    with open(annotation_json, encoding="utf-8") as fh:
        ann = json.load(fh)
    if "sentences" not in ann:
        raise ValueError(f"{annotation_json}: no 'sentences' list (not an MSR-VTT annotation file)")
    captions: Dict[str, List[str]] = {}
    for s in ann["sentences"]:
        captions.setdefault(s["video_id"], []).append(s["caption"])
    if "videos" in ann:
        ids = [v["video_id"] for v in ann["videos"] if split is None or v.get("split") == split]
    else:
        if split is not None:
            raise ValueError(f"{annotation_json}: has no 'videos' list, cannot filter on split={split!r}")
        ids = list(captions)
    return [VideoRecord(_find_video(video_dir, vid), tuple(captions[vid]), meta={"video_id": vid})
            for vid in ids if vid in captions]
