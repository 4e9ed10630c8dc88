// hal host shim stand-in for <cuda_fp16.h>: the shim provides what hal's sources use.
#pragma once
#include "hal_host_shim.h"
