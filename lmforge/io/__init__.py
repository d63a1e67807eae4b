"""Document I/O and the writing discipline (bottom layer: imports nothing of lmforge above it).

    lmforge.io.documents   make_doc, doc_bytes, ErrorSink (bad records counted and kept aside)
    lmforge.io.readers     iter_documents / iter_file / list_files: jsonl(.gz/.zst), parquet, csv, txt, md, html, warc
    lmforge.io.writers     DocWriter, ShardedWriter (jsonl.zst / parquet shards, written atomically)
    lmforge.io.atomic      write_text / write_json / write_jsonl / atomic_open: temp name, then rename
    lmforge.io.fs          upath: a local Path, or an FsPath over fsspec for a URL (s3://, gs://, hf://, memory://)
"""
