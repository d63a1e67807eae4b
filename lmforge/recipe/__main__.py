"""`python -m lmforge.recipe RECIPE.yaml` (same as `lmforge run RECIPE.yaml`)."""
import sys

from .run import main

sys.exit(main())
