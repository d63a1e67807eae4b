"""HTML -> main text, keeping the title and language hints in meta.

Backend choice, measured with `python -m lmforge.data.extract` (2-core CPU, an 8 KB
article page with navigation, sidebar and footer, 200 runs):
    resiliparse  extract_plain_text(main_content=True):  0.58 ms/page, 7135 chars
    trafilatura  extract():                              4.23 ms/page, 7075 chars (~7x slower)
Both kept the article paragraphs and dropped navigation and footer;
resiliparse is the default, trafilatura is selectable (backend: trafilatura).

Only documents with meta.format == "html" are extracted; others pass unchanged.

resiliparse 2.0.1's main-content mode drops every text node (or element holding only one)
whose stripped text is a single character of three UTF-8 bytes (U+0800-U+FFFF): it means to
drop icon-font glyphs of the private use area (U+E000-U+F8FF), but it compares the three
bytes read as a little-endian integer, so the range test passes for every such character.
Markup like `「<span>Date1</span>」是开始日期` (LibreOffice's Chinese help) lost its opening
quote, `<p>按<kbd>F1</kbd>键` lost 按, `<b>注</b>` vanished. `_guard_single_chars` appends a
Unicode noncharacter to each such node outside the private use area before parsing, so the
node is longer than three bytes, and the marker is removed from the text afterwards.
"""
from __future__ import annotations

import html as htmllib
import re

from .pipeline import Step

_BLANKS = re.compile(r"\n{3,}")
# a text node between two tags that is one character (raw or an entity) with blanks around it
_SINGLE = re.compile(r">(\s*)([^\x00-\x7f<>&\s]|&[#\w]{1,31};)(\s*)<")
_MARK = "\ufdd0"   # a noncharacter: never in interchanged text, so removing it loses nothing


def _guard_single_chars(html: str) -> str:
    """Mark the lone characters resiliparse would drop (see the module docstring)."""
    def mark(m: re.Match) -> str:
        ch = htmllib.unescape(m.group(2))
        if len(ch) != 1 or not 0x800 <= ord(ch) <= 0xFFFF or 0xE000 <= ord(ch) <= 0xF8FF:
            return m.group(0)   # not hit by the bug, or a real icon glyph: as resiliparse does
        return f">{m.group(1)}{m.group(2)}{_MARK}{m.group(3)}<"
    return _SINGLE.sub(mark, html)


def _lang_hints(tree) -> dict:
    """<html lang>, <meta http-equiv=content-language>, og:locale."""
    hints = {}
    html = tree.document.query_selector("html")
    if html is not None and html.getattr("lang"):
        hints["html_lang"] = html.getattr("lang").strip()
    for m in tree.document.query_selector_all("meta"):
        key = (m.getattr("http-equiv") or m.getattr("property") or m.getattr("name") or "").lower()
        if key in ("content-language", "og:locale", "language") and m.getattr("content"):
            hints[key.replace(":", "_").replace("-", "_")] = m.getattr("content").strip()
    return hints


def extract_resiliparse(html: str, main_content: bool = True) -> tuple[str, dict]:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(_guard_single_chars(html) if main_content else html)
    text = extract_plain_text(tree, main_content=main_content, alt_texts=False,
                              links=False, list_bullets=True, noscript=False).replace(_MARK, "")
    meta = {"title": (tree.title or "").strip(), **_lang_hints(tree)}
    return text, meta


def extract_trafilatura(html: str, main_content: bool = True) -> tuple[str, dict]:
    import trafilatura
    from resiliparse.parse.html import HTMLTree

    text = trafilatura.extract(html, include_comments=not main_content, include_tables=True,
                               favor_precision=False) or ""
    tree = HTMLTree.parse(html)  # title and language hints the same way for both backends
    meta = {"title": (tree.title or "").strip(), **_lang_hints(tree)}
    return text, meta


def extract_html(html: str, backend: str = "resiliparse", main_content: bool = True
                 ) -> tuple[str, dict]:
    fn = extract_resiliparse if backend == "resiliparse" else extract_trafilatura
    text, meta = fn(html, main_content)
    text = _BLANKS.sub("\n\n", text).strip()
    return text, {k: v for k, v in meta.items() if v}


class ExtractStep(Step):
    modified_reason = "extract_markup"

    def open_shard(self, ctx, index):
        def apply(i, doc):
            if doc["meta"].get("format") != "html":
                return doc, None
            try:
                text, hints = extract_html(doc["text"], self.cfg.backend, self.cfg.main_content)
            except Exception:  # a page the parser cannot handle: reject, do not crash
                return None, "extract_error"
            if len(text) < self.cfg.min_chars:
                return None, "extract_empty"
            doc["text"] = text
            doc["meta"].update(hints)
            doc["meta"]["format"] = "text"
            doc["meta"]["extracted_from"] = "html"
            return doc, None
        return apply


def _measure(n: int = 200) -> None:  # python -m lmforge.data.extract
    import time

    page = ("<html lang='en'><head><title>T</title></head><body><nav><a href='/'>Home</a> "
            "<a href='/a'>About</a></nav><div class='sidebar'><ul>" + "<li>link</li>" * 30 +
            "</ul></div><article><h1>Title</h1>" +
            "".join(f"<p>Paragraph {i} of the article with some real sentences in it, "
                    "enough words to look like prose that a reader would read.</p>"
                    for i in range(60)) +
            "</article><footer>Copyright. All rights reserved. Privacy policy.</footer></body></html>")
    for backend in ("resiliparse", "trafilatura"):
        extract_html(page, backend)
        t = time.perf_counter()
        for _ in range(n):
            text, _ = extract_html(page, backend)
        dt = (time.perf_counter() - t) / n
        print(f"{backend:12s} {dt * 1e3:7.2f} ms/page  {len(page) / 1e3:.1f} KB -> "
              f"{len(text)} chars, footer kept: {'rights reserved' in text}")


if __name__ == "__main__":
    _measure()
