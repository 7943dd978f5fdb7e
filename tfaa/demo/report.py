"""The demo's outputs: GIFs per sampled video, a contact-sheet PNG and report.json / report.md."""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Sequence

import numpy as np

from tfaa.video_io import save_video

from .measure import METRICS

__all__ = ["slug", "write_gifs", "contact_sheet", "write_report"]


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (``"w/o TFAA"`` -> ``"wo_tfaa"``)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace("w/o", "wo")).strip("_")


def write_gifs(videos: np.ndarray, prompts: Sequence[str], out_dir: str, prefix: str, scale: int = 4,
               fps: float = 4.0) -> List[str]:
    """Write each ``(F, H, W, 3)`` uint8 video as ``out_dir/<prefix>_<prompt>.gif``, upscaled ``scale``x
    (nearest neighbour). Returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for video, prompt in zip(videos, prompts):
        big = video.repeat(scale, axis=1).repeat(scale, axis=2)
        path = os.path.join(out_dir, f"{prefix}_{slug(prompt)}.gif")
        save_video(big.astype(np.float32) / 255.0, path, fps=fps)
        paths.append(path)
    return paths


def contact_sheet(rows: List[tuple], path: str, scale: int = 3, label_width: int = 260) -> str:
    """One row per ``(label, video (F, H, W, 3) uint8)``, frames left to right; saved as PNG at ``path``."""
    from PIL import Image, ImageDraw

    f, h, w, _ = rows[0][1].shape
    cell_h, cell_w, gap = h * scale, w * scale, 2
    sheet = Image.new("RGB", (label_width + f * (cell_w + gap), len(rows) * (cell_h + gap) + 18), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j in range(f):
        draw.text((label_width + j * (cell_w + gap) + 2, 2), f"frame {j}", fill=(0, 0, 0))
    for i, (label, video) in enumerate(rows):
        y = 18 + i * (cell_h + gap)
        draw.multiline_text((4, y + cell_h // 2 - 12), label, fill=(0, 0, 0))
        for j in range(f):
            frame = Image.fromarray(video[j]).resize((cell_w, cell_h), Image.NEAREST)
            sheet.paste(frame, (label_width + j * (cell_w + gap), y))
    sheet.save(path, optimize=True)
    return path


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_report(out_dir: str, report: Dict[str, object]) -> tuple:
    """Write ``report.json`` and ``report.md`` (the measure table first) to ``out_dir``; returns both paths."""
    json_path = os.path.join(out_dir, "report.json")
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    lines = ["# tfaa demo report", "",
             "Temporal consistency on the synthetic set (thesis Table 5.4 at toy scale). Measured, not tuned:",
             "each row is the same weights-free measure (colour tracking of the captioned shape) applied to",
             "that row's videos.", "",
             "| model | videos | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, summary in report["measure"].items():
        lines.append(f"| {name} | {summary['videos']} | " + " | ".join(_fmt(summary[m]) for m in METRICS) + " |")
    lines += ["", "## The measure", "", report["measure_definition"], "",
              "## Per-video results", "", "| model | prompt | sample | " + " | ".join(METRICS) + " |",
              "|---|---|---|" + "---|" * len(METRICS)]
    for row in report["per_video"]:
        lines.append(f"| {row['model']} | {row['prompt']} | {row['sample']} | "
                     + " | ".join(_fmt(None if row[m] != row[m] else row[m]) for m in METRICS) + " |")
    lines += ["", "## Training", ""]
    for name, info in report["training"].items():
        lines.append(f"- {name}: {info['steps']} steps, {info['trainable_parameters']:,} trainable parameters, "
                     f"loss first/last 10% {_fmt(info['loss_start'])} -> {_fmt(info['loss_end'])}, "
                     f"{info['seconds']:.0f} s")
    lines += ["", "## Files", "", f"- contact sheet: `{report['files']['contact_sheet']}` (rows: prompt x model, "
              "columns: frames)", "- GIFs: `gifs/`", "- settings: `report.json` -> `config`", "",
              f"Device: {report['device']}; total time {report['seconds_total']:.0f} s.", ""]
    md_path = os.path.join(out_dir, "report.md")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return json_path, md_path
