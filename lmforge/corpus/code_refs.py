"""Code references: curated, well-documented standard-library modules (quality positives).

Skywork's quality classifier needs text "fit to be cited" per language and domain; for
code the corpus has none of its own (docs/quality-topics.md). These are CPython modules
known for their documentation: module and function docstrings, explained algorithms,
examples in doctests (PSF-2.0, like the stdlib source). They are read from the running
CPython's Lib/ folder (the stdlib source's root, or `LMFORGE_STDLIB_DIR`) at build time,
also when the documents come from the committed sample, and written to
quality_positives.jsonl with meta domain "code", lang "en" (the langid step tags Python
code "en", so the code documents fall into the group "en/code" the references match).

No leakage: a reference module is never a document. The stdlib source withholds these
paths from docs/stdlib.jsonl.zst (counted as `withheld_references`), and none of them is
in the committed sample (tests/test_data_quality.py checks both).
"""
from __future__ import annotations

import ast
import platform
from pathlib import Path

from .common import stable_hash

LICENSE = "PSF-2.0"

# Lib/-relative paths. Chosen for documentation quality (docstrings on the module and on
# most functions, comments that explain why), not generated tables (keyword.py,
# encodings/*), not thin wrappers (decimal.py, contextvars.py).
MODULES = (
    "abc.py", "argparse.py", "base64.py", "bisect.py", "calendar.py", "cmd.py", "code.py",
    "codeop.py", "colorsys.py", "configparser.py", "contextlib.py", "copyreg.py", "csv.py",
    "dataclasses.py", "difflib.py", "enum.py", "filecmp.py", "fnmatch.py", "fractions.py",
    "functools.py", "gettext.py", "glob.py", "graphlib.py", "hashlib.py", "heapq.py", "hmac.py",
    "html/__init__.py", "http/cookies.py", "ipaddress.py", "json/__init__.py", "json/decoder.py",
    "json/encoder.py", "linecache.py", "mimetypes.py", "netrc.py", "numbers.py", "operator.py",
    "pathlib.py", "posixpath.py", "pprint.py", "pyclbr.py", "queue.py", "quopri.py", "random.py",
    "reprlib.py", "runpy.py", "sched.py", "secrets.py", "selectors.py", "shlex.py", "shutil.py",
    "stat.py", "statistics.py", "string.py", "symtable.py", "tabnanny.py", "textwrap.py",
    "timeit.py", "tokenize.py", "tracemalloc.py", "types.py", "uuid.py", "warnings.py",
    "weakref.py", "asyncio/locks.py", "asyncio/queues.py", "concurrent/futures/thread.py",
    "urllib/parse.py",
    # and the unit tests of some of them: reviewed, idiomatic code in the form that half of
    # a stdlib corpus has (without them the classifier learns "a test file is not a reference")
    "test/test_abc.py", "test/test_base64.py", "test/test_bisect.py", "test/test_colorsys.py",
    "test/test_contextlib.py", "test/test_csv.py", "test/test_difflib.py", "test/test_fnmatch.py",
    "test/test_glob.py", "test/test_graphlib.py", "test/test_heapq.py", "test/test_hmac.py",
    "test/test_json/test_decode.py", "test/test_linecache.py", "test/test_netrc.py",
    "test/test_operator.py", "test/test_pprint.py", "test/test_queue.py", "test/test_reprlib.py",
    "test/test_sched.py", "test/test_secrets.py", "test/test_selectors.py", "test/test_shlex.py",
    "test/test_string.py", "test/test_textwrap.py", "test/test_timeit.py",
)
PATHS = frozenset(MODULES)
PIECES = 3  # top-level functions / classes per module that are references of their own


def pieces(text: str, path: str, n: int = PIECES) -> list[tuple[str, str]]:
    """Up to n top-level definitions (name, source with decorators and the comment lines
    just above), picked by a stable hash. Whole modules are long; the corpus holds short
    files too, and references of one length teach the classifier that length is quality."""
    try:
        body = ast.parse(text).body
    except SyntaxError:
        return []
    lines = text.splitlines(keepends=True)
    defs = [d for d in body if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    defs.sort(key=lambda d: (stable_hash(f"{path}:{d.name}"), d.name))
    out = []
    for d in defs[:n]:
        start = min([d.lineno] + [x.lineno for x in d.decorator_list]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        out.append((d.name, "".join(lines[start:d.end_lineno])))
    return out


def read(root: Path | None) -> list[dict]:
    """Raw records {"path", "text"} of the modules found under `root` (a missing one is skipped:
    another CPython version may lack it)."""
    out = []
    for rel in MODULES if root is not None else ():
        f = root / rel
        if f.is_file():
            out.append({"path": rel, "text": f.read_text("utf-8")})
    return out


def emit(records: list[dict], ctx) -> int:
    """Add each module and up to PIECES of its definitions to quality_positives.jsonl;
    returns how many references."""
    n = 0
    for rec in records:
        meta = {"source": "cpython-stdlib", "domain": "code", "lang": "en", "format": "python",
                "license": LICENSE, "path": rec["path"], "quality": "reference"}
        parts = [(f"cpython/Lib/{rec['path']}#reference", rec["text"])]
        parts += [(f"cpython/Lib/{rec['path']}#reference:{name}", src)
                  for name, src in pieces(rec["text"], rec["path"])]
        for ref_id, text in parts:
            ctx.add("quality_positives.jsonl", {"id": ref_id, "text": text, "meta": meta})
            n += 1
    return n


def version() -> str:
    return platform.python_version()
