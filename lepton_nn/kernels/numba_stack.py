"""stack_array(shape, dtype): np.empty on the stack for numba kernels, like a local array in C.

Why the fast numba kernels need it: an array from np.empty lives on the heap, and LLVM must
assume it may alias the kernel's inputs, so a small accumulator tile in one is loaded and
stored at every update. On the stack (an LLVM alloca) it is provably private, and LLVM keeps it
in vector registers: the fused conv kernels ran ~4× faster, and the GEMM micro-kernel's tile
of C lives there (docs/benchmarks.md, "The fused conv kernels" and "Our GEMM, step by step").
`shape` must be built from constants (module globals are), and the array must never leave the
function that asks for it. Under NUMBA_DISABLE_JIT=1 it is plain np.empty.
"""
import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import config as numba_config, types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

if numba_config.DISABLE_JIT:  # the kernels run as Python, where a heap array does the same
    def stack_array(shape, dtype):
        return np.empty(shape, dtype)
else:
    @intrinsic
    def stack_array(typingctx, shape, dtype):
        """np.empty(shape, dtype) on the stack; shape holds constants."""
        dims = tuple(shape) if isinstance(shape, numba_types.BaseTuple) else (shape,)
        if not (all(isinstance(d, numba_types.IntegerLiteral) for d in dims)
                and isinstance(dtype, (numba_types.DType, numba_types.NumberClass))):
            return None
        sizes = [d.literal_value for d in dims]
        array_type = numba_types.Array(dtype.dtype, len(sizes), "C")

        def codegen(context, builder, signature, args):
            element, intp = context.get_data_type(dtype.dtype), context.get_value_type(numba_types.intp)
            itemsize = context.get_abi_sizeof(element)
            storage = cgutils.alloca_once(builder, llvm_ir.ArrayType(element, math.prod(sizes)))
            array = make_array(array_type)(context, builder)
            populate_array(array, data=builder.bitcast(storage, element.as_pointer()),
                           shape=[intp(d) for d in sizes],
                           strides=[intp(itemsize * math.prod(sizes[k + 1:])) for k in range(len(sizes))],
                           itemsize=intp(itemsize), meminfo=None)
            return array._getvalue()

        return array_type(shape, dtype), codegen
