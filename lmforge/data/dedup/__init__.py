"""Deduplication: document-level MinHash LSH (minhash.py) and exact substrings (substring.py)."""
