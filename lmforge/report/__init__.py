"""The run report library: collect what a run folder holds (collect.py), draw it (plots.py),
lay it out as tables (tables.py) and write report.html + report.md (build.py). The `report`
stage is lmforge.stages.report."""
