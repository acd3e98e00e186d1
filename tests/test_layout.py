"""The README's layout section names every module and folder of the package (issue 13: the layout matches the tree)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Layout"):]
    section = section[:section.index("```", section.index("```") + 3)]
    package = ROOT / "src" / "kgdistill"
    missing = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(package)
        folder_ok = len(rel.parts) == 1 or f"{rel.parts[0]}/" in section
        if not folder_ok or not re.search(rf"(?<![\w/]){re.escape(path.name)}", section):
            missing.append(str(rel))
    assert not missing, f"modules not in the README's layout section: {missing}"
