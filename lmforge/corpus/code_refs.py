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

import platform
from pathlib import Path

LICENSE = "PSF-2.0"

# Lib/-relative paths. Chosen for documentation quality (docstrings on the module and on
# most functions, comments that explain why), not generated tables (keyword.py,
# encodings/*), not tests, not thin wrappers (decimal.py, contextvars.py).
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
)
PATHS = frozenset(MODULES)


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
    """Add the references to quality_positives.jsonl; returns how many."""
    for rec in records:
        ctx.add("quality_positives.jsonl", {
            "id": f"cpython/Lib/{rec['path']}#reference", "text": rec["text"],
            "meta": {"source": "cpython-stdlib", "domain": "code", "lang": "en", "format": "python",
                     "license": LICENSE, "path": rec["path"], "quality": "reference"}})
    return len(records)


def version() -> str:
    return platform.python_version()
