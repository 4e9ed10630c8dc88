"""hal.backends.host: the rendered CUDA and HIP text compiled for and run on the host CPU."""
