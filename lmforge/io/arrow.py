"""Data saved by Hugging Face `datasets`: a `save_to_disk` folder (state.json, dataset_info.json,
data-0000N-of-0000M.arrow) or one of its `.arrow` files, read as records.

`datasets` writes Arrow IPC *stream* files (its ArrowWriter is a RecordBatchStreamWriter), so
pyarrow, already a dependency, reads them without `datasets` installed (the Arrow IPC *file*
format, Feather v2, is read too). A folder's files come in state.json's `_data_files` order,
as `load_from_disk` concatenates them; save_to_disk writes rows with any select/shuffle
already applied, so the files are the dataset. A DatasetDict folder (dataset_dict.json and one
folder per split) is refused in one line naming its splits: which split is the data is the
user's choice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from lmforge.config import ConfigError

SIDE_FILES = ("state.json", "dataset_info.json", "dataset_dict.json")


def is_dataset_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file())


def dataset_files(path: str | Path) -> list[Path]:
    """The .arrow files of a save_to_disk folder, in load_from_disk's order."""
    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        splits = json.loads((p / "dataset_dict.json").read_text(encoding="utf-8")).get("splits") or []
        raise ConfigError(f"{p}: a datasets DatasetDict folder (splits: {', '.join(splits) or 'none'}); "
                          f"give one split's folder, e.g. {p / (splits[0] if splits else 'train')}")
    state = json.loads((p / "state.json").read_text(encoding="utf-8"))
    files = [p / f["filename"] for f in state.get("_data_files", []) if isinstance(f, dict) and "filename" in f]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file (named by {p / 'state.json'})")
    return files or sorted(p.glob("*.arrow"))


def iter_arrow_rows(path: str | Path, batch_rows: int = 1024) -> Iterator[dict]:
    """Each row of an Arrow IPC stream (or file) as a dict; memory-mapped, a batch at a time."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
            batches = iter(reader)
        except pa.ArrowInvalid:   # not a stream: the IPC file format
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        for batch in batches:
            for start in range(0, batch.num_rows, batch_rows):
                yield from batch.slice(start, batch_rows).to_pylist()
