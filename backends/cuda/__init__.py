"""hal.backends.cuda."""
