"""hal.render: the C-style renderer shared by CUDA and HIP, its C helpers, and the
vendor-neutral compile checks (subprocess runner, cache, resource records, limits)."""
