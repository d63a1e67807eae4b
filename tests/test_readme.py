"""The README stands alone in a clone: its links resolve inside the repository, its Python
requirement is pyproject.toml's, and its tiny-recipe figures are the recipe header's."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_links_stay_inside_the_clone():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text and "DESIGN.md" not in text, doc
        for target in LINK.findall(text):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
            assert path.exists(), f"{doc.name}: {target} does not exist"


def test_python_requirement_is_pyprojects():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    need = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject).group(1)
    assert re.search(rf"Python {re.escape(need)} or newer", README), f"README must say Python {need} or newer"
    assert not re.search(r"Python 3\.\d+\+", README)


def test_tiny_recipe_figures_are_the_headers():
    header = "\n".join(line.lstrip("# ") for line in (ROOT / "recipes" / "tiny.yaml").read_text().splitlines()
                       if line.startswith("#"))
    header = " ".join(header.split())
    wall = re.search(r"(\d+ min \d+ s) wall", header).group(1)
    rss = re.search(r"peak RSS ([\d.]+ [GM]B)", header).group(1)
    train = re.search(r"train loss ([\d.]+ -> [\d.]+)", header).group(1)
    v0, v1 = re.search(r"validation ([\d.]+) at step \d+ -> ([\d.]+)", header).groups()
    row = next(line for line in README.splitlines() if line.startswith("| `recipes/tiny.yaml`"))
    for want in (f"{wall} wall", f"peak RSS {rss}", f"train loss {train}", f"validation {v0} -> {v1}"):
        assert want in row, f"README's tiny row should say {want!r} (recipes/tiny.yaml header): {row}"
