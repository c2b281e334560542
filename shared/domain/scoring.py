"""The score's meaning, shared by the pipeline that computes it and the API that shows it."""

HACK_THRESHOLD = 0.98  # the seed's recommended threshold: a score at or above it is a hack
