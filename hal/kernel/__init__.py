"""hal.kernel: the kernel IR (ir), its verifier (verify) and its printer (printer)."""

from hal.kernel.ir import *  # noqa: F401,F403
from hal.kernel.ir import Kernel
from hal.kernel.printer import format_expr, print_kernel
from hal.kernel.verify import KernelError, verify_kernel

__all__ = ["Kernel", "KernelError", "verify_kernel", "print_kernel", "format_expr"]
