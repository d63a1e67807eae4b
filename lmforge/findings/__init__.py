"""The reports' findings, rerun in miniature: each finding is a controlled comparison (a
baseline arm and its variants at equal tokens, everything else identical) built from the
existing stages, run over several seeds, with the report's claim and the expected direction
declared before anything runs, and a verdict computed by one stated rule (`verdict.py`).

    lmforge findings normhead --set data=runs/findings/tokens      # one finding
    lmforge run recipes/findings.yaml                               # all of them + a report

Layer 6: above the stages (a finding runs pretrain, grow, sft ... as its arms), below the
recipe runner and the command line.
"""
