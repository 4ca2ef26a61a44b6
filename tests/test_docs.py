"""The README stays a short user guide, and no text in the package, tests, suites or docs points at the work period
or the ticket it was written in, which no user can follow: a comment says why, in its own words."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200  # a user guide; the measurements and the method live in docs/
WHERE = ("bmbench", "tests", "suites", "docs", "examples")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt"}
# built from parts so that this file does not match itself
FORBIDDEN = re.compile(r"\b(" + "sess" + r"ions?|" + "iss" + r"ues?\s*#?\d+)", re.IGNORECASE)


def texts() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile"]
    for folder in WHERE:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in files if p.is_file() and "egg-info" not in str(p)]


def test_no_session_or_issue_number_in_the_text() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in texts()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert found == []


def test_the_pattern_catches_what_it_is_for() -> None:
    assert FORBIDDEN.search("measured in " + "iss" + "ue 12") and FORBIDDEN.search("(last " + "sess" + "ion)")
    assert FORBIDDEN.search("Iss" + "ue #15:") and not FORBIDDEN.search("an issue with the data")


def test_the_readme_is_a_short_guide_that_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    docs = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert docs and all(f"docs/{name}" in readme for name in docs)
    assert "make demo" in readme and "make test" in readme and "pip install ." in readme
