"""hal.backends.cpu_sim."""
