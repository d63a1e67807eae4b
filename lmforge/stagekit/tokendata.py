"""A stage's token-folder input, opened with the CLI's two kinds of failure kept apart."""
from __future__ import annotations

from lmforge.config import ConfigError
from lmforge.shards import DamagedTokens, TokenDataset


def open_tokens(path, split: str = "train", key: str = "data") -> TokenDataset:
    """The TokenDataset of `path`'s `split`. A folder that is missing or is not a token dataset is a
    ConfigError naming `key` (exit 2: the config points at the wrong place); one that is there but
    damaged (a cut shard, a damaged meta.json) stays DamagedTokens (exit 5: bad data)."""
    try:
        return TokenDataset(path, split)
    except DamagedTokens:
        raise
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
