"""Pipeline definitions. `study_pipeline` is the one spine: kfp.local runs it, the compiler ships it."""
