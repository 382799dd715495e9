"""Regenerate the settings table in README.md from server/settings.py (``make docs``)."""

import re
from pathlib import Path

from server.settings import settings_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
text = README.read_text("utf-8")
updated = re.sub(
    r"(<!-- settings-table:start[^>]*-->\n).*?(\n<!-- settings-table:end -->)",
    lambda m: m.group(1) + settings_table_markdown() + m.group(2),
    text,
    flags=re.DOTALL,
)
README.write_text(updated, "utf-8")
print("README.md settings table:", "updated" if updated != text else "already current")
