"""hal.conformance."""
