"""The pipeline's stages, one module per `dvc.yaml` stage, each a thin command-line entry
point (`python -m polychromic.stages.<stage>`) with a `main()` that reads its own params
section (`polychromic.settings`) and calls libraries. A stage imports no other stage and no
command (tests/unit/test_stage_deps.py)."""
