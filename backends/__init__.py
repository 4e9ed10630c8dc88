"""hal.backends."""
