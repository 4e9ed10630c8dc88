"""hal.fusion."""
