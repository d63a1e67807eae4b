"""`lmforge run RECIPE.yaml`: every stage of a recipe, in order (see lmforge.recipe)."""
from __future__ import annotations


def register(subparsers) -> None:
    from lmforge.recipe.run import add_args, command
    p = subparsers.add_parser("run", help="run a recipe: every stage in order, resumable",
                              description="Run every stage of RECIPE.yaml in order. Finished stages "
                                          "skip, an interrupted one resumes: rerun the same command.")
    add_args(p)
    p.set_defaults(func=command)
