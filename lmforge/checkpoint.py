"""The checkpoint format (bottom layer): folders that survive kill -9 and load without executing code.

    checkpoints/step-N/
        model.safetensors   weights (safetensors: no pickle)
        optimizer.pt        optimizer state, loaded with torch.load(weights_only=True)
        rng.pt              torch (CPU, CUDA) RNG states, weights_only-loadable tensors
        trainer.json        step, counters, objective/loader position, data fingerprint, RNG of
                            numpy and python, the run config
        meta.json           written LAST: file sizes; its presence marks the folder complete

The folder is written as `.tmp-step-N` and renamed, so a crash leaves either no folder
or a complete one; a folder without a valid meta.json is an unfinished save and is never
used. A folder with meta.json whose files do not have the sizes it records (a truncated
copy, a disk that lost a tail) is corrupt, exactly like an unreadable file: CorruptCheckpoint
names the file, and resuming falls back to the previous one with a warning. Pruning renames a folder to `.trash-step-N` before
deleting it, so a kill during the deletion never leaves a half-deleted `step-N`; `clean()`
removes what a kill left (temp and trash folders, incomplete folders older than the
newest complete one). A file that is present but cannot be read (a corrupt optimizer.pt,
a damaged safetensors header) raises CorruptCheckpoint naming the file; the trainer then
falls back to the previous complete checkpoint.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model

from lmforge.io.account import DataError
from lmforge.io.atomic import copy_file, fsync_dir, with_default_mode, write_json

_STEP = re.compile(r"^step-(\d+)$")
_LEFTOVER = re.compile(r"^\.(tmp|trash)-step-\d+")


class CorruptCheckpoint(DataError):
    """A file of a complete-looking checkpoint cannot be read."""


def _unreadable(f: Path, e: BaseException) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"{f}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''})")


def rng_state() -> tuple[dict, dict]:
    """(tensors for rng.pt, JSON-able dict for trainer.json)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    np_state = np.random.get_state()
    py_state = random.getstate()
    plain = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, plain


def set_rng_state(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    n = plain["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _meta_files(path: Path) -> dict[str, int] | None:
    """The file sizes meta.json records, or None when there is no valid completeness marker
    (an unfinished save: the folder was never renamed from .tmp, or meta.json is damaged)."""
    try:
        info = json.loads((Path(path) / "meta.json").read_text())
        files = info["files"]
        if not info.get("complete") or not isinstance(files, dict):
            return None
        return {str(k): int(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def has_marker(path: Path) -> bool:
    """meta.json says the save finished (its files may since have been damaged)."""
    return _meta_files(path) is not None


def verify(path: Path) -> None:
    """Raise CorruptCheckpoint naming the first file whose size differs from what meta.json
    records (a truncated copy, a disk that lost the tail) or that is missing."""
    for name, size in (_meta_files(path) or {}).items():
        f = Path(path) / name
        try:
            actual = f.stat().st_size
        except OSError as e:
            raise _unreadable(f, e) from None
        if actual != size:
            raise CorruptCheckpoint(f"{f}: unreadable (truncated: {actual} bytes, meta.json records {size})")


def is_complete(path: Path) -> bool:
    """A finished save whose every file has the size meta.json records."""
    if not has_marker(path):
        return False
    try:
        verify(path)
    except CorruptCheckpoint:
        return False
    return True


def list_complete(ckpt_dir: Path) -> list[Path]:
    """Finished checkpoints (meta.json present), oldest first. Their files are checked when
    they are used (verify / resolve / Trainer.resume_latest): a damaged one is reported as
    corrupt there, never taken for an unfinished save and silently skipped."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found) if has_marker(p)]


def latest(ckpt_dir: Path) -> Path | None:
    """The newest finished checkpoint (see list_complete; its files are not checked here)."""
    done = list_complete(ckpt_dir)
    return done[-1] if done else None


def _remove(p: Path) -> None:
    """Rename aside first (atomic), then delete: a kill mid-way leaves `.trash-*`, never a
    half-deleted step-N that looks like a checkpoint."""
    trash = p.with_name(f".trash-{p.name}")
    os.replace(p, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean(ckpt_dir: Path) -> None:
    """Remove what a kill left: `.tmp-step-*` and `.trash-step-*` folders, and incomplete
    step-N folders older than the newest complete one (a newer incomplete one is left for
    the user to look at; it is never resumed from)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return
    done = list_complete(ckpt_dir)
    newest = int(_STEP.match(done[-1].name).group(1)) if done else -1
    for p in ckpt_dir.iterdir():
        m = _STEP.match(p.name)
        if _LEFTOVER.match(p.name) or (m and int(m.group(1)) < newest and not has_marker(p)):
            shutil.rmtree(p, ignore_errors=True)


def prune(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and what kills left."""
    ckpt_dir = Path(ckpt_dir)
    done = list_complete(ckpt_dir)
    for p in done[:-keep_last] if keep_last > 0 else []:
        _remove(p)
    clean(ckpt_dir)


def load_trainer_state(path: Path) -> dict:
    f = Path(path) / "trainer.json"
    try:
        return json.loads(f.read_text())
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
        raise _unreadable(f, e) from None


def read_safetensors(f: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (ours or a Hugging Face folder's); a damaged file (a cut
    or garbage header, a size that does not cover the tensors) is CorruptCheckpoint naming it."""
    from safetensors.torch import load_file
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise _unreadable(Path(f), e) from None


def load_weights(path: Path, model: torch.nn.Module, strict: bool = True) -> None:
    f = Path(path) / "model.safetensors"
    if not f.is_file():
        raise FileNotFoundError(errno.ENOENT, "checkpoint has no model.safetensors", str(f))
    try:
        missing, unexpected = load_model(model, str(f), strict=strict, device=str(next(model.parameters()).device))
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(f, e) from None
    except RuntimeError as e:
        if "size mismatch" in str(e) or "Missing key" in str(e) or "Unexpected key" in str(e):
            raise ValueError(f"{path}: weights do not match the model ({str(e).splitlines()[0][:200]})") from None
        raise _unreadable(f, e) from None
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: weights do not match the model (missing {missing}, unexpected {unexpected})")


def is_sharded(path: Path) -> bool:
    return (Path(path) / "dcp").is_dir()


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    f = Path(path) / "optimizer.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: checkpoint has no optimizer state")
    optimizer.load_state_dict(_torch_load(f))


def _torch_load(f: Path):
    """torch.load(weights_only=True): no code runs; a damaged file is CorruptCheckpoint."""
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise _unreadable(f, e) from None


def load_rng(path: Path, plain: dict) -> None:
    tensors = _torch_load(Path(path) / "rng.pt")
    try:
        set_rng_state(tensors, plain)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise _unreadable(Path(path) / "rng.pt", e) from None


# -- writing: the trainer (lmforge.train.checkpoint.save) fills a temp folder, then commits it --

def temp_dir(ckpt_dir: Path, step: int) -> Path:
    """A fresh `.tmp-step-N` folder to write a checkpoint into."""
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir / f".tmp-step-{step}"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit(tmp: Path, step: int, trainer_state: dict) -> Path:
    """Write rng.pt, trainer.json and, last, meta.json into `tmp` (every file on disk before the
    marker says it is), then rename it to step-N."""
    tmp = Path(tmp)
    tensors, plain = rng_state()
    torch.save(tensors, tmp / "rng.pt")
    write_json(tmp / "trainer.json", {**trainer_state, "step": step, "rng": plain}, indent=None)
    sizes = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    for p in tmp.rglob("*"):
        if p.is_file():
            with_default_mode(p)        # safetensors creates its files 0600; the rest follow the umask
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    write_json(tmp / "meta.json", {"step": step, "complete": True, "files": sizes}, indent=None)
    final = tmp.parent / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(tmp.parent)
    return final


# -- finding checkpoints and what they belong to ------------------------------------------------

def why_none(path: str | Path) -> str:
    """Why `path` gave no checkpoint, for the error line: absent, a file, step folders that are
    all unfinished or damaged saves (no valid meta.json), or safetensors without a config.json.
    "" when none of these (an unrelated folder)."""
    p = Path(path)
    if not p.exists():
        return "no such file or folder"
    if not p.is_dir():
        return "a file, not a folder"
    steps = sorted((d for c in (p, p / "checkpoints") if c.is_dir() for d in c.iterdir()
                    if _STEP.match(d.name) and d.is_dir() and not has_marker(d)),
                   key=lambda d: int(_STEP.match(d.name).group(1)))
    if _STEP.match(p.name) and not has_marker(p):
        steps = [p]
    if steps:
        names = ", ".join(d.name for d in steps[-3:])
        return f"{names}{' ...' if len(steps) > 3 else ''}: no valid meta.json, an unfinished or damaged save"
    if (p / "model.safetensors").is_file() and not (p / "config.json").is_file():
        return "model.safetensors but no config.json"
    return ""


def resolve(path: str | Path) -> Path:
    """A step-N folder as given, or the newest usable checkpoint under a run folder.

    A finished checkpoint with a file of the wrong size is corrupt: as given it raises
    CorruptCheckpoint; under a run folder it is named in a warning and the previous one is
    used; when every one is damaged, CorruptCheckpoint names them all (exit 5)."""
    p = Path(path)
    if has_marker(p):
        verify(p)
        return p
    for cand in (p / "checkpoints", p):
        failures = []
        for found in reversed(list_complete(cand)):
            try:
                verify(found)
            except CorruptCheckpoint as e:
                failures.append(str(e))
                continue
            if failures:
                print(f"warning: {'; '.join(failures)}; falling back to the previous complete checkpoint "
                      f"{found}", file=sys.stderr)
            return found
        if failures:
            raise CorruptCheckpoint(f"no usable checkpoint in {cand}: {'; '.join(failures)}")
    why = why_none(p)
    raise FileNotFoundError(f"{path}: no complete checkpoint found{f' ({why})' if why else ''} (a step-N folder "
                            f"with meta.json, or a run folder holding checkpoints/)")


def run_dir_of(step_dir: Path) -> Path:
    step_dir = Path(step_dir)
    return step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir.parent


def tokenizer_dir_of(step_dir: Path) -> Path | None:
    d = run_dir_of(step_dir) / "tokenizer"
    return d if (d / "tokenizer.json").is_file() else None


# What a tokenizer folder holds (ours and Hugging Face's): all a run keeps of its tokenizer.
# A stage started from a Hugging Face model folder must not copy the weights beside them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "lmforge_tokenizer.json", "tokenizer.model", "added_tokens.json",
                   "vocab.json", "merges.txt")


def copy_tokenizer(src_dir: str | Path | None, run_dir: str | Path) -> Path | None:
    """Keep a copy of the tokenizer files (TOKENIZER_FILES, nothing else: a Hugging Face
    model folder's weights stay where they are) beside the run's checkpoints (idempotent)."""
    if not src_dir or not (Path(src_dir) / "tokenizer.json").is_file():
        return None
    dst = Path(run_dir) / "tokenizer"
    if Path(src_dir).resolve() != dst.resolve():
        dst.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (Path(src_dir) / name).is_file():
                copy_file(Path(src_dir) / name, dst / name)
    return dst
