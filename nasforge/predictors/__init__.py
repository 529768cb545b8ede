"""Performance predictors and the architecture encodings they read."""
