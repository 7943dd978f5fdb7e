"""benchmarks/common.py write_section: the RESULTS.md sections benchmarks rewrite."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from common import write_section  # noqa: E402


def test_write_section_keeps_sibling_tables(tmp_path):
    """A run of one mode rewrites its own table under the shared heading and nothing else."""
    path = str(tmp_path / "RESULTS.md")
    with open(path, "w") as f:
        f.write("# Results\n\n<!-- other -->\nkept\n<!-- /other -->\n")
    write_section(path, "attn:temporal", "temporal v1", parent="attn", parent_text="## Attention")
    write_section(path, "attn:spatial", "spatial v1", parent="attn", parent_text="## Attention")
    write_section(path, "attn:temporal", "temporal v2", parent="attn", parent_text="## Attention")
    text = open(path).read()
    assert "kept" in text and "spatial v1" in text and "temporal v2" in text
    assert "temporal v1" not in text
    assert text.count("## Attention") == 1
    # both tables sit inside the parent section, temporal first (the order they were added)
    start, end = text.index("<!-- attn -->"), text.index("<!-- /attn -->")
    assert start < text.index("temporal v2") < text.index("spatial v1") < end


def test_write_section_without_parent(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    write_section(path, "conv", "a")
    write_section(path, "conv", "b")
    text = open(path).read()
    assert text.startswith("# Benchmark results") and "b" in text.split("<!-- conv -->")[1]
    assert text.count("<!-- conv -->") == 1
