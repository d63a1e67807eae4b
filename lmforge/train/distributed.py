"""Data-parallel sharded training under torchrun: FSDP2 (`fully_shard`) and DCP checkpoints.

The model knows nothing of this module; the trainer calls `setup()` once and `shard()` on
the model. Every rank builds the same global micro-batch (the loader is deterministic)
and trains on its own contiguous slice of rows, so a run with N processes sees exactly
the batches of a one-process run with the same global batch, and resumes at any world
size: the loader position is global, and `torch.distributed.checkpoint` reshards the
model and optimizer state on load.

    torchrun --nproc_per_node=8 -m lmforge pretrain recipe.yaml

On CUDA: NCCL, bf16 parameters in compute with fp32 gradient reduction
(MixedPrecisionPolicy), optional activation checkpointing per block. On CPU: gloo,
fp32 (used by the tests).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False   # started by torchrun: a process group and FSDP2, even at world size 1

    @property
    def enabled(self) -> bool:
        return self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    """Join the torchrun process group if launched by torchrun (also at world size 1, so that
    `torchrun --nproc_per_node=1` runs the FSDP2 + DCP path, e.g. to check it on one GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return DistInfo(rank, world, local, launched=True)


def shard(model: torch.nn.Module, device_type: str, activation_checkpointing: bool = False) -> torch.nn.Module:
    """fully_shard each transformer block, then the root (embeddings, final norm, head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if device_type == "cuda" else MixedPrecisionPolicy())
    layers = model.layers
    # recomputation lives in Transformer.forward (parameter names stay unwrapped)
    model.activation_checkpointing = activation_checkpointing
    for i, block in enumerate(layers):
        # the last block's parameters are needed right away in backward: no point resharding
        fully_shard(block, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    fully_shard(model, mp_policy=mp)
    return model


def pad_rows(batch: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """`batch` with rows appended up to `n` that train nothing: labels -100, everything else 0
    (the loss is normalised by target tokens, so an empty row changes no number)."""
    have = next(iter(batch.values())).shape[0]
    return {k: torch.cat([v, torch.full((n - have, *v.shape[1:]), -100 if k == "labels" else 0,
                                        dtype=v.dtype, device=v.device)]) for k, v in batch.items()}


def local_rows(batch: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """This rank's contiguous slice of a global micro-batch. A token-level batch (with labels) whose
    rows do not divide by the world size (the last, partial micro-batch of an SFT epoch) is padded
    with empty rows first; any other batch must divide."""
    if not info.enabled:
        return batch
    n = next(iter(batch.values())).shape[0]
    if n % info.world and "labels" in batch:
        batch = pad_rows(batch, n + info.world - n % info.world)
        n = next(iter(batch.values())).shape[0]
    if n % info.world:
        raise ValueError(f"train.micro_batch_size ({n} rows) must be a multiple of the world size {info.world}")
    per = n // info.world
    return {k: v[info.rank * per:(info.rank + 1) * per] for k, v in batch.items()}


def to_local(x):
    """A DTensor (e.g. a clipped total norm) as a plain tensor."""
    full = getattr(x, "full_tensor", None)
    return full() if full is not None else x


def all_reduce_sum(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# -- checkpoints ----------------------------------------------------------------------------
def _safe_reader(folder):
    """A DCP reader whose metadata unpickler only builds an allowlist of plain classes.

    DCP's own reader uses plain `pickle.load` on `.metadata`, which could run code from a
    crafted checkpoint (the Python docs' "restricting globals" recipe closes that); tensor
    and bytes payloads already load with torch.load(weights_only=True).
    """
    import pickle

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import filesystem, metadata as md

    allowed = {(c.__module__, c.__qualname__): c for c in (
        md.Metadata, md.TensorStorageMetadata, md.BytesStorageMetadata, md.ChunkStorageMetadata,
        md.TensorProperties, md.MetadataIndex, md.StorageMeta, md._MEM_FORMAT_ENCODING,
        filesystem._StorageInfo, torch.Size)}
    # torch's own weights-only unpickler allows these too: name -> layout / container
    import collections
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    import pathlib
    allowed[("pathlib", "PosixPath")] = pathlib.PosixPath  # the checkpoint id DCP records
    allowed[("pathlib", "WindowsPath")] = pathlib.PureWindowsPath
    dtypes = {str(getattr(torch, n)).split(".")[-1]: getattr(torch, n) for n in dir(torch)
              if isinstance(getattr(torch, n, None), torch.dtype)}

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            if module == "torch" and name in dtypes:
                return dtypes[name]
            raise pickle.UnpicklingError(f"checkpoint metadata refers to {module}.{name}, which is not allowed")

    class SafeReader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as f:
                meta = Restricted(f).load()
            if getattr(meta, "storage_meta", None) is None:
                meta.storage_meta = md.StorageMeta()
            meta.storage_meta.load_id = self.load_id
            return meta

    return SafeReader(str(folder))


def save_sharded(folder, model, optimizer) -> None:
    """Each rank writes its shards of model + optimizer (DCP); loadable at any world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))


def load_sharded(folder, model, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, storage_reader=_safe_reader(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_model_state(model) -> dict[str, torch.Tensor]:
    """The whole (unsharded) model state on CPU, on rank 0 (empty elsewhere): for safetensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model, sd: dict) -> None:
    """A full state dict (e.g. a Hugging Face folder's, converted) into a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True,
                                                             strict=not any(k.endswith(".lora_A") for k in
                                                                            model.state_dict())))


def load_full_weights(path, model) -> None:
    """Full safetensors weights into a sharded model (every rank reads the file)."""
    from pathlib import Path

    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    sd = load_file(str(Path(path) / "model.safetensors"))
    if "lm_head.weight" not in sd and getattr(getattr(model, "cfg", None), "tie_embeddings", False):
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))
