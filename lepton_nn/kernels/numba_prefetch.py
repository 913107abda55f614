"""prefetch(array, index): ask for the cache line of a 1-D array's element `index`, as C's
__builtin_prefetch; for numba kernels, which have no such call of their own.

Why: a training step leaves the dense layer's operands out of cache, and the packed GEMM reads
them a panel at a time, in a pattern the hardware prefetchers do not follow (one short run per
row of a 21 KB-long row); C asks for the next panel's lines while it computes with this one
(csrc/lepton_kernels_generic.inc, pack_b; docs/benchmarks.md, "Inside a training step").
A prefetch never faults and changes no result, so `index` may lie past the array's end; it is
a hint the CPU may ignore. Under NUMBA_DISABLE_JIT=1 it does nothing.
"""
from llvmlite import ir as llvm_ir
from numba import config as numba_config, types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

if numba_config.DISABLE_JIT:
    def prefetch(array, index):
        pass
else:
    @intrinsic
    def prefetch(typingctx, array, index):
        """Prefetch array[index] for reading into every cache level (array: 1-D, any layout)."""
        if not (isinstance(array, numba_types.Array) and array.ndim == 1 and isinstance(index, numba_types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            data = make_array(signature.args[0])(context, builder, args[0]).data
            element = context.get_data_type(signature.args[0].dtype)
            index = context.cast(builder, args[1], signature.args[1], numba_types.intp)
            address = builder.gep(data, [index], source_etype=element)  # unchecked: a prefetch cannot fault
            i32 = llvm_ir.IntType(32)
            declared = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [address.type, i32, i32, i32]),
                "llvm.prefetch.p0")
            builder.call(declared, [address, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
            return context.get_dummy_value()

        return numba_types.void(array, index), codegen
