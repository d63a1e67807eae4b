"""Hugging Face `datasets` data as inputs: a save_to_disk folder (several shards, in
load_from_disk's order) and one of its .arrow files give SFT, DPO and the raw-document reader
the same records as the jsonl they were made from; a DatasetDict folder is refused in one line."""
import random

import numpy as np
import pyarrow as pa
import pytest

datasets = pytest.importorskip("datasets")

from lmforge.align.formats import without_nulls  # noqa: E402
from lmforge.align.preference_data import load_pairs  # noqa: E402
from lmforge.align.sft_data import load_conversations  # noqa: E402
from lmforge.config import ConfigError  # noqa: E402
from lmforge.io.arrow import dataset_files, iter_arrow_rows  # noqa: E402
from lmforge.io.documents import ErrorSink  # noqa: E402
from lmforge.io.readers import iter_documents, list_files  # noqa: E402
from lmforge.tokenizer.train import load_tokenizer  # noqa: E402
from test_align_utils import conversation, make_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


def saved(records, folder, shards=3):
    ds = datasets.Dataset.from_list(records)
    ds.save_to_disk(str(folder), num_shards=shards)
    # the order we must keep: load_from_disk's (its rows carry nulls for keys other rows have)
    assert [without_nulls(r) for r in datasets.load_from_disk(str(folder))] == records
    return folder


def test_sft_reads_a_saved_dataset_folder_and_its_arrow_file(tok, tmp_path):
    rng = random.Random(0)
    records = [conversation(rng, rng.randint(1, 3), rng.random() < 0.3) for _ in range(30)]
    # keys only some messages have: Arrow fills them with nulls in the others, read as absent
    records[0]["messages"][1]["weight"] = 0
    records[1]["messages"][0]["name"] = "ann"
    jsonl = write_jsonl(tmp_path / "c.jsonl", records)
    folder = saved(records, tmp_path / "ds")
    files = dataset_files(folder)
    assert len(files) == 3 and all(f.suffix == ".arrow" for f in files)

    def load(path):
        convs, stats = load_conversations([str(path)], tok, 256, 8, ErrorSink(None))
        return [c.ids.tolist() for c in convs], stats

    ref, ref_stats = load(jsonl)
    got, stats = load(folder)
    assert got == ref and stats["kept"] == ref_stats["kept"] == 30
    first, _ = load(files[0])
    assert first == ref[:len(first)] and 0 < len(first) < 30


def test_dpo_reads_a_saved_dataset_folder(tok, tmp_path):
    records = [{"prompt": f"What color is the {t}?", "chosen": f"The {t} is blue.", "rejected": "No."}
               for t in ("sky", "sea", "leaf", "milk", "snow")]
    ref, _ = load_pairs([str(write_jsonl(tmp_path / "p.jsonl", records))], tok, 128, ErrorSink(None))
    got, stats = load_pairs([str(saved(records, tmp_path / "ds", 2))], tok, 128, ErrorSink(None))
    assert stats["kept"] == 5 and all(np.array_equal(a.chosen, b.chosen) and np.array_equal(a.rejected_mask,
                                                                                              b.rejected_mask)
                                      for a, b in zip(got, ref))


def test_raw_documents_from_a_saved_folder_inside_an_input_folder(tmp_path):
    records = [{"text": f"Document number {i}.", "url": f"u{i}"} for i in range(7)]
    saved(records, tmp_path / "in" / "ds")
    write_jsonl(tmp_path / "in" / "more.jsonl", [{"text": "Another one."}])
    errors = ErrorSink(None)
    docs = list(iter_documents([str(tmp_path / "in")], errors))
    assert [d["text"] for d in docs[:7]] == [r["text"] for r in records] and docs[7]["text"] == "Another one."
    assert docs[0]["meta"]["url"] == "u0" and errors.total == 0   # state.json etc. are not inputs
    assert list_files([tmp_path / "in" / "ds"]) == dataset_files(tmp_path / "in" / "ds")


def test_dataset_dict_is_refused_naming_its_splits(tmp_path):
    d = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "a"}]),
                              "test": datasets.Dataset.from_list([{"text": "b"}])})
    d.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match=r"DatasetDict folder \(splits: .*train.*\); give one split's folder"):
        list_files([tmp_path / "dd"])
    assert [x["text"] for x in iter_documents([str(tmp_path / "dd" / "train")], ErrorSink(None))] == ["a"]


def test_arrow_ipc_file_format_is_read_too(tmp_path):
    table = pa.table({"text": ["x", "y", "z"]})
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    assert [r["text"] for r in iter_arrow_rows(tmp_path / "t.arrow", batch_rows=2)] == ["x", "y", "z"]
