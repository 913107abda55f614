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
    # Each flag runs one benchmark; with neither --train nor --profile, --kernels (the default).
    backends = args.backend.split(",") if args.backend != "all" else None
    common = dict(json_path=args.json, rounds=args.rounds, compare=args.compare)
    status = 0
    if args.kernels or not (args.train or args.profile):
        from lepton_nn.bench import kernels as kernel_bench
        cases = args.case.split(",") if args.case else None
        status = kernel_bench.main(backends, repeat=args.repeat, cases=cases, progress=_progress("timing"), **common)
    if args.train or args.profile:
        from lepton_nn.bench import train as train_bench
        options = dict(steps=args.steps, data=args.data, threads=args.threads, progress=_progress(""))
        if args.profile:
            status = train_bench.profile_main(backends, json_path=args.json, **options) or status
        else:
            status = train_bench.main(backends, full=args.full, **options, **common) or status
    return status


def _progress(verb):
    """Progress lines on stderr when it is a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    return lambda what: print(f"  {verb + ' ' if verb else ''}{what} …", file=sys.stderr, flush=True)


def _use_backend(name):
    from lepton_nn import kernels
    if name:
        kernels.set_backend(name)
    return kernels.active_name()


def _train(args):
    from lepton_nn import train
    _use_backend(args.backend)
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    train.train(epochs=args.epochs, batch_size=args.batch_size, data=args.data, seed=args.seed, save=args.save,
                verbose=verbose)
    return 0


def _evaluate(args):
    from lepton_nn import keras, train
    from lepton_nn.data import mnist
    backend = _use_backend(args.backend)
    model = keras.models.load_model(args.model)
    _, (x_test, y_test) = mnist.load_data(args.data)
    x_test = train.preprocess(x_test).reshape((-1,) + model.input_shape[1:])
    loss = model.evaluate(x_test, y_test, batch_size=256, verbose=0) if model.compiled else None
    loss = loss[0] if isinstance(loss, list) else loss
    print(f"model {args.model} on the {len(x_test):,} MNIST test images (backend {backend})")
    train.report(y_test, model.predict(x_test, batch_size=256), loss=loss)
    return 0


def _predict(args):
    import numpy as np

    from lepton_nn import keras
    from lepton_nn.data import images
    _use_backend(args.backend)
    model = keras.models.load_model(args.model, compile=False)
    image = images.load_image(args.image, invert=args.invert).reshape(model.input_shape[1:])
    probabilities = model.predict(image)
    best = int(np.argmax(probabilities))
    print(f"{args.image}: {best}  (probability {probabilities[best]:.4f})")
    for k in np.argsort(probabilities)[::-1][:3]:
        print(f"  {int(k)}: {probabilities[k]:.4f}")
    return 0


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
    p.add_argument("--backend", default="all", help="comma-separated runs: lepton_nn backends (numpy, numba, c) "
                   "and peers (torch; with --train also torch-cl, tf-keras, jax, or 'peers'); default all available")
    p.add_argument("--case", help="--kernels: comma-separated cases to time (default all; names in docs/benchmarks.md)")
    p.add_argument("--repeat", type=int, default=50, help="timed runs per kernel and round, at most (stops after ~1 s); default 50")
    p.add_argument("--rounds", type=int, default=3, help="run everything round-robin this many times: cells show "
                   "the median and min–max over rounds, ratios are medians of per-round ratios; default 3")
    p.add_argument("--json", metavar="FILE", help="also write every figure, every round, to FILE as JSON")
    p.add_argument("--compare", metavar="OLD.json", help="compare with an earlier run's --json: each figure's "
                   "change, flagged when it is beyond the spread of the two runs")
    p.add_argument("--train", action="store_true", help="train and evaluate the classic MNIST CNN per backend and "
                   "in each peer framework, each in a fresh process: ms/step, images/s, GFLOP/s, peak RSS, first step")
    p.add_argument("--profile", action="store_true", help="with --train: where a step's time goes, per op and kernel")
    p.add_argument("--steps", type=int, default=200, help="--train: timed training steps of batch 64; default 200")
    p.add_argument("--full", action="store_true", help="--train: also the whole 5-epoch run per framework, for its "
                                                       "peak memory (slow)")
    p.add_argument("--data", metavar="DIR", help="--train: directory with the four MNIST files (default: "
                                                 "$LEPTON_NN_DATA, the cache, or a download)")
    p.add_argument("--threads", type=int, help="--train: pin every run's threads to N (default: each framework's "
                   "own default)")
    p.set_defaults(run=_bench)

    p = sub.add_parser("train", help="train the classic Keras MNIST CNN, then report test accuracy, per-class "
                                     "precision/recall/F1 and the confusion matrix")
    p.add_argument("--epochs", type=int, default=5, help="default 5")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--backend", help="kernel backend: numpy, numba or c (default: the fastest available)")
    p.add_argument("--data", metavar="DIR", help="directory with the four MNIST files (default: $LEPTON_NN_DATA, "
                                                 "the cache, or a download)")
    p.add_argument("--seed", type=int, default=0, help="random seed (initialisation, shuffling); default 0")
    p.add_argument("--save", metavar="PATH", help="write the trained model to PATH (.lnn)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2),
                   help="1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2)")
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="evaluate a saved model (.lnn) on the MNIST test set")
    p.add_argument("--model", required=True, metavar="PATH")
    p.add_argument("--data", metavar="DIR", help="directory with the four MNIST files")
    p.add_argument("--backend", help="kernel backend (default: the fastest available)")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("predict", help="classify one 28×28 image (.png or .npy) with a saved model")
    p.add_argument("--model", required=True, metavar="PATH")
    p.add_argument("image", metavar="IMAGE", help="a .png (8-bit grey/RGB/RGBA/palette) or .npy (28, 28) image")
    p.add_argument("--invert", action="store_true", help="dark digit on a light background: invert it first")
    p.add_argument("--backend", help="kernel backend (default: the fastest available)")
    p.set_defaults(run=_predict)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, OSError) as err:  # OSError: missing data files, failed download
        print(f"lepton-nn {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
