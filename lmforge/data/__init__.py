"""Data pipeline: raw documents -> extracted, filtered, deduplicated, balanced shards.

Entry points: `readers.iter_documents`, `writers.write_documents`, `pipeline.run_pipeline`,
`cli.register` (the `lmforge data` subcommand).
"""
