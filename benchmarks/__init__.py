"""Benchmarks of infinium_logging against the standard library and the official client."""
