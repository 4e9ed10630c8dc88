"""hal.hal.devices."""
