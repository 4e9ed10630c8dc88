// hal host shim stand-in for <hip/hip_runtime.h>: the shim provides what hal's sources use.
#pragma once
#include "hal_host_shim.h"
