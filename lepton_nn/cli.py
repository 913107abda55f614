"""The `lepton-nn` command."""
import argparse
import sys


def _gradcheck(args):
    from lepton_nn import kernels, tour
    cases = [c for c in tour.CASES if args.op in (None, c.op)]
    if not cases:
        ops = sorted({c.op for c in tour.CASES})
        sys.exit(f"lepton-nn gradcheck: unknown op {args.op!r}; ops are: {', '.join(ops)}")
    if args.backend == "all":
        names = kernels.available_backends()
    else:
        kernels.get(args.backend)
        names = [args.backend]
    passed = tour.run(cases, names)
    print(f"\n{'all passed' if passed else 'FAILURES above'}: {len(cases)} case(s) on backend(s) {', '.join(names)}")
    return 0 if passed else 1


def _backends(args):
    from lepton_nn import kernels
    for info in kernels.backends():
        print(info)
    print(f"active: {kernels.active_name()}")
    return 0


def _bench(args):
    # Each flag runs one benchmark; with no flag, --kernels. (--train is added as a second flag.)
    status = 0
    if args.kernels or not getattr(args, "train", False):
        from lepton_nn.bench import kernels as kernel_bench
        backends = args.backend.split(",") if args.backend != "all" else None
        progress = (lambda what: print(f"  timing {what} …", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
        status = kernel_bench.main(backends, repeat=args.repeat, json_path=args.json, progress=progress)
    return status


def build_parser():
    parser = argparse.ArgumentParser(prog="lepton-nn", description="lepton_nn: read, verify and benchmark a neural-network engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gradcheck", help="check every op's gradient against central differences (float64)")
    p.add_argument("--op", help="only this op (e.g. conv2d, max_pool2d, cross_entropy)")
    p.add_argument("--backend", default="numpy", help="numpy, numba, c, or all (default: numpy)")
    p.set_defaults(run=_gradcheck)

    p = sub.add_parser("backends", help="list the kernel backends and whether they are available")
    p.set_defaults(run=_backends)

    p = sub.add_parser("bench", help="benchmarks: --kernels (the default) times every kernel on every backend and PyTorch")
    p.add_argument("--kernels", action="store_true", help="the kernel table: ms, GFLOP/s, %% of GEMM, speedups, targets")
    p.add_argument("--backend", default="all", help="comma-separated backends to time (numpy, numba, c, torch); default all")
    p.add_argument("--repeat", type=int, default=50, help="timed runs per kernel, at most (stops after ~2 s); default 50")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.set_defaults(run=_bench)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError) as err:
        print(f"lepton-nn {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
