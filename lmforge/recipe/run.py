"""Running a recipe: stages in order, status in RUN_DIR/recipe.json, skip and resume.

A stage is always handed to its own `run`: a finished stage skips itself (its DONE.json or
its own marker) and an interrupted one resumes from what it left, so "rerun the same
command" is the whole recovery story. recipe.json is bookkeeping for people and for the
report (status pending/running/done/failed, seconds, the stage's summary), never the
source of truth for skipping.

Under torchrun (WORLD_SIZE > 1) training stages run on every rank; the others run on rank
0 while the other ranks wait at a barrier on a gloo group with a long timeout (data
stages can take hours; NCCL's default timeout would kill the job).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from lmforge.config import ConfigError
from lmforge.io.atomic import write_json
from lmforge.stagekit.summary import summary_line

from .config import Recipe, RecipeStage, load_recipe
from lmforge.stagekit.lock import RunLock


def _scalar_items(summary: dict) -> str:
    return summary_line(summary) or "-"


class Ledger:
    """RUN_DIR/recipe.json: the stages with their status, kept across reruns."""

    def __init__(self, recipe: Recipe, write: bool):
        self.path = Path(recipe.run_dir) / "recipe.json"
        self.write_enabled = write
        old = {}
        if self.path.is_file():
            try:
                old = {s["name"]: s for s in json.loads(self.path.read_text()).get("stages", [])}
            except (ValueError, KeyError, TypeError):
                old = {}
        self.data = {"name": recipe.name, "recipe": recipe.source, "run_dir": recipe.run_dir,
                     "smoke": recipe.smoke, "stages": []}
        for st in recipe.stages:
            prev = old.get(st.name, {})
            entry = {"name": st.name, "kind": st.kind, "objective": st.stage.extra.get("objective", ""),
                     "out_dir": st.out_dir, "deps": st.deps,
                     "status": prev.get("status", "pending"), "seconds": prev.get("seconds"),
                     "cpu_seconds": prev.get("cpu_seconds"),
                     "fingerprint": prev.get("fingerprint")}
            if "summary" in prev:
                entry["summary"] = prev["summary"]
            self.data["stages"].append(entry)

    def entry(self, name: str) -> dict:
        return next(e for e in self.data["stages"] if e["name"] == name)

    def update(self, name: str, **kw) -> None:
        self.entry(name).update(kw)
        self.save()

    def save(self) -> None:
        if self.write_enabled:
            write_json(self.path, self.data)


def select(recipe: Recipe, only: list[str] | None, start: str | None, until: str | None,
           target: str | None = None) -> list[int]:
    """Indices of the stages to run: `--target T` (T and all it needs), `--only a,b`, or
    `--from A` / `--until B` (inclusive)."""
    if target:
        if only or start or until:
            raise ConfigError("--target cannot be combined with --only/--from/--until")
        return [recipe.index(n) for n in recipe.needs(target)]
    if only:
        names = [n.strip() for item in only for n in item.split(",") if n.strip()]
        return sorted({recipe.index(n) for n in names})
    lo = recipe.index(start) if start else 0
    hi = recipe.index(until) if until else len(recipe.stages) - 1
    if lo > hi:
        raise ConfigError(f"--from {start} comes after --until {until}")
    return list(range(lo, hi + 1))


class Ranks:
    """Process-group helpers for torchrun; a no-op in a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.group = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world <= 1:
            return
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            # the same backend the trainer would pick (lmforge.train.distributed.setup)
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if cuda else "gloo")
        if self.group is None:
            self.group = dist.new_group(backend="gloo", timeout=timedelta(days=7))
        dist.barrier(group=self.group)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (stage workers): with wall time, it
    tells a slow stage from a busy machine."""
    import resource
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def run_stage(st: RecipeStage, i: int, n: int, ledger: Ledger, ranks: Ranks, progress: bool,
              log) -> dict | None:
    fp = st.fingerprint()
    entry = dict(ledger.entry(st.name))  # as it was before this run
    if ranks.is_main:
        log(f"== [{i + 1}/{n}] {st.name} ({st.kind}) -> {st.out_dir}")
        if entry["status"] == "done" and entry.get("fingerprint") not in (None, fp):
            log(f"   note: {st.name}'s config changed since it finished; a stage that finds its finished "
                f"output skips: delete {st.out_dir} to redo it (and the stages after it)")
    if not st.stage.distributed and not ranks.is_main:
        ranks.barrier()  # rank 0 runs it
        return None
    if ranks.is_main:
        ledger.update(st.name, status="running", error=None)
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        summary = st.stage.run(st.config, progress=progress) or {}
    except BaseException as e:
        if ranks.is_main:
            ledger.update(st.name, status="failed", error=f"{type(e).__name__}: {e}"[:500],
                          seconds=round(time.perf_counter() - t0, 3))
        raise
    seconds = round(time.perf_counter() - t0, 3)
    cpu = round(cpu_seconds() - c0, 3)
    if ranks.is_main:
        if summary.get("skipped"):
            log(f"-- {st.name}: already done, skipped ({_scalar_items(summary)})")
            if entry.get("status") == "done" and entry.get("seconds") is not None:
                seconds, cpu = entry["seconds"], entry.get("cpu_seconds")  # keep the real run's times
        else:
            log(f"-- {st.name}: done in {seconds:.1f}s ({_scalar_items(summary)})")
        clean = {k: v for k, v in summary.items() if k != "skipped"}
        ledger.update(st.name, status="done", seconds=seconds, cpu_seconds=cpu, fingerprint=fp,
                      summary=json.loads(json.dumps(clean, default=str)))
    if not st.stage.distributed:
        ranks.barrier()
    return summary


def finished(st: RecipeStage, ledger: Ledger) -> bool:
    """Has this stage's output been completed (by this run folder's ledger or the stage's own
    rule: DONE.json, or its `finished` hook)?"""
    if ledger.entry(st.name).get("status") == "done" and Path(st.out_dir).exists():
        return True
    try:
        return st.stage.done(st.config) is not None
    except ConfigError:      # finished from other inputs: it will refuse when it runs
        return False


def check_order(recipe: Recipe, todo: list[int], ledger: Ledger) -> None:
    """A selected stage whose input stage neither runs now nor has finished: say which to run first."""
    chosen = {recipe.stages[i].name for i in todo}
    for i in todo:
        st = recipe.stages[i]
        for dep in st.deps:
            if dep not in chosen and not finished(recipe.stage(dep), ledger):
                raise ConfigError(f"stage {st.name} needs {dep}, which has not finished in {recipe.run_dir}: "
                                  f"run it first (--target {st.name} runs {st.name} and everything it needs)")


def run_recipe(recipe: Recipe, only: list[str] | None = None, start: str | None = None,
               until: str | None = None, progress: bool = True, log=print, target: str | None = None) -> dict:
    """Run the selected stages in order; returns the recipe.json content."""
    todo = select(recipe, only, start, until, target)
    ranks = Ranks()
    ledger = Ledger(recipe, write=ranks.is_main)
    check_order(recipe, todo, ledger)
    lock = RunLock(recipe.run_dir, log) if ranks.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        if ranks.is_main:
            ledger.save()
            if recipe.smoke:
                log(f"== SMOKE RUN of {recipe.source}: every stage shrunk (factors {recipe.smoke}); "
                    f"numbers from it say nothing about the model")
        t0 = time.perf_counter()
        for i in todo:
            run_stage(recipe.stages[i], i, len(recipe.stages), ledger, ranks, progress, log)
        if ranks.is_main:
            log(f"== {recipe.name}: {len(todo)} stage(s) in {time.perf_counter() - t0:.1f}s; "
                f"status in {ledger.path}")
            log(format_table(ledger.data))
    finally:
        if lock is not None:
            lock.release()
    return ledger.data


def format_table(data: dict) -> str:
    def num(v):
        return f"{v:.1f}" if isinstance(v, (int, float)) else "-"
    rows = [f"   {'stage':14s} {'kind':10s} {'status':8s} {'seconds':>9s} {'cpu s':>9s}  out_dir"]
    for e in data["stages"]:
        rows.append(f"   {e['name']:14s} {e['kind']:10s} {e['status']:8s} {num(e.get('seconds')):>9s} "
                    f"{num(e.get('cpu_seconds')):>9s}  {e['out_dir']}")
    return "\n".join(rows)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/tiny.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set stages.sft.config.max_steps=50 or "
                        "--set device=cuda (repeatable; `lmforge config show KIND` lists a stage's keys)")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help="run only these stages (repeatable or comma-separated)")
    p.add_argument("--from", dest="start", default=None, metavar="NAME", help="start at this stage")
    p.add_argument("--until", default=None, metavar="NAME", help="stop after this stage")
    p.add_argument("--target", default=None, metavar="NAME",
                   help="run NAME and only the stages it needs (finished ones skip)")
    p.add_argument("--smoke", action="store_true",
                   help="every stage shrunk by one common factor to run in minutes on CPU (into RUN_DIR-smoke)")
    p.add_argument("--check", action="store_true",
                   help="validate the whole recipe (each stage and how they fit) and list it; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def plan(recipe: Recipe, todo: set[int]) -> list[str]:
    """`--check`'s listing: per stage, done (finished: a run skips it), run (selected, not
    finished) or skip (not selected), its kind, out_dir and inputs."""
    ledger = Ledger(recipe, write=False)
    lines = []
    for i, st in enumerate(recipe.stages):
        mark = "done" if finished(st, ledger) else "run " if i in todo else "skip"
        after = f"  <- {', '.join(st.deps)}" if st.deps else ""
        lines.append(f"{mark} {st.name:14s} {st.kind:10s} -> {st.out_dir}{after}")
    return lines


def command(args: argparse.Namespace) -> int:
    from .check import check_recipe
    recipe = load_recipe(args.recipe, args.overrides, smoke=args.smoke)
    if args.only and (args.start or args.until):
        raise ConfigError("--only cannot be combined with --from/--until")
    todo = set(select(recipe, args.only, args.start, args.until, args.target))
    problems = check_recipe(recipe)
    if args.check:
        try:   # a selected stage whose input neither runs nor has finished: what the run would refuse
            check_order(recipe, sorted(todo), Ledger(recipe, write=False))
        except ConfigError as e:
            problems = [*problems, f"{recipe.source}: {e}"]
        print("\n".join(plan(recipe, todo)))
        from . import fidelity
        print(fidelity.describe(recipe) + "\n" + fidelity.describe_languages(recipe))
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print(f"{recipe.source}: {len(problems)} problem(s); nothing was run", file=sys.stderr)
            return 2
        print(f"{recipe.source}: ok ({len(recipe.stages)} stages, run dir {recipe.run_dir})")
        return 0
    if problems:
        more = f" (and {len(problems) - 1} more: --check lists them)" if len(problems) > 1 else ""
        raise ConfigError(problems[0].removeprefix(f"{recipe.source}: ") + more)
    if not args.quiet:
        run_recipe(recipe, args.only, args.start, args.until, progress=True, target=args.target)
        return 0
    # --quiet: no progress lines and no stage chatter on stdout; an error is the one line the CLI
    # prints, a good run one closing line (warnings still go to stderr)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        data = run_recipe(recipe, args.only, args.start, args.until, progress=False, log=lambda *a: None,
                          target=args.target)
    if int(os.environ.get("RANK", "0")) == 0:     # under torchrun: one closing line, rank 0 keeps recipe.json
        done = sum(e.get("status") == "done" for e in data["stages"])
        print(f"{recipe.name}: {done}/{len(data['stages'])} stage(s) done; status in "
              f"{Path(recipe.run_dir) / 'recipe.json'}")
    return 0
