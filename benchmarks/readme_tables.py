"""Write a benchmark's table into the README between its markers, so the README's numbers come
from the benchmark that measured them, never typed by hand."""

from __future__ import annotations

import re
from pathlib import Path


def replace_table(readme: Path, name: str, markdown: str) -> None:
    """Replace what stands between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `readme`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {start} ... {end} markers to replace")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{markdown}\n{end}", text))
