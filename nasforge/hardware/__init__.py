"""Hardware-aware NAS: latency cost models, latency tables from profiling, latency-aware estimators."""
