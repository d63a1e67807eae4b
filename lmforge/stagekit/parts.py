"""Finished parts of a stage kept on disk, so an interrupted stage resumes with what it had done.

Each part is out_dir/parts/NAME.json holding {"key", "result"}; the key hashes what the part
depends on (checkpoint, settings), so a part computed under other settings is redone."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from lmforge.io.atomic import read_json, write_json


class Parts:
    def __init__(self, out: str | Path):
        self.dir = Path(out) / "parts"

    def get_or_run(self, name: str, key_obj, fn):
        """The saved result of part `name` if its key matches `key_obj`, else fn() (then saved)."""
        key = hashlib.sha256(json.dumps(key_obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"
        if path.is_file():
            saved = read_json(path)
            if saved.get("key") == key:
                return saved["result"]
        result = fn()
        write_json(path, {"key": key, "result": result})
        return result
