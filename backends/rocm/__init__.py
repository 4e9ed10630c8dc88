"""hal.backends.rocm."""
