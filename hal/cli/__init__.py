"""hal.hal.cli."""
