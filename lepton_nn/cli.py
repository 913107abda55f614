"""The `lepton-nn` command.

Every argument is checked while parsing, before any work starts (argparse's own error: usage
and exit status 2): counts by `positive_int` / `non_negative_int`, names by `one_of` /
`names_of`, paths read by `existing_file` / `image_file` / `mnist_dir`, paths written by
`writable_path`. A run is never lost, minutes in, to an argument that could have been checked
at the start.
"""
import argparse
import math
import sys
from pathlib import Path

from lepton_nn.kernels import NAMES as BACKENDS  # the names only: no backend is imported


# --------------------------------------------------------------------------- argument types
def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}")
        return value
    return parse


positive_int = _int_at_least(1)      # --epochs, --batch-size, --steps, --rounds, --repeat, --threads
non_negative_int = _int_at_least(0)  # --seed


def one_of(names):
    """An argparse type: one of `names`, a tuple or a function returning one (called only when
    the option is given, so a list that costs an import is built only when needed)."""
    def parse(text):
        known = names() if callable(names) else names
        if text not in known:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(known)}, got {text!r}")
        return text
    return parse


def names_of(names, everything=None):
    """An argparse type: a comma-separated list of `names` (as in one_of), or `everything` alone."""
    def parse(text):
        known = names() if callable(names) else names
        unknown = [n for n in text.split(",") if n not in known]
        if unknown and text != everything:
            also = f"{everything!r} or " if everything else ""
            raise argparse.ArgumentTypeError(f"expected {also}a comma-separated list of {', '.join(known)}; "
                                             f"unknown: {', '.join(map(repr, unknown))}")
        return text
    return parse


def existing_file(text):
    if not Path(text).is_file():
        found = "a directory" if Path(text).is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: expected an existing file, found {found}")
    return text


def image_file(text):
    """An existing .npy file, or one whose suffix is an image format Pillow reads (what
    lepton_nn.data.images.load_image reads); without Pillow, only .npy."""
    existing_file(text)
    suffix = Path(text).suffix.lower()
    if suffix == ".npy":
        return text
    from lepton_nn.data import images
    try:
        known = images.pillow().registered_extensions()
    except ImportError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err} (a .npy array needs nothing)") from None
    if suffix not in known:
        raise argparse.ArgumentTypeError(f"{text}: expected an image Pillow reads (.png, .jpg, .bmp, .gif, .tif, "
                                         f"…) or a .npy array, found suffix {suffix or '(none)'!r}")
    return text


def mnist_dir(text):
    """A directory holding the four MNIST files (or a parent of one named mnist)."""
    from lepton_nn.data import mnist
    try:
        mnist.files_in(text, "--data")
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def shakespeare_dir(text):
    """A directory holding Tiny Shakespeare's input.txt (or a parent of one named tinyshakespeare)."""
    from lepton_nn.data import shakespeare
    try:
        shakespeare.find_file(text)
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def percentage(text):
    """A share of the labels, in percent: a number in (0, 100]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}")
    return value


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def writable_path(text):
    """A file path that can be written (its directory exists and is writable): checked now,
    not after minutes of work."""
    from lepton_nn.fileio import check_writable
    try:
        return check_writable(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _ops():
    from lepton_nn import tour
    return tuple(sorted({c.op for c in tour.CASES}))


def _bench_runs():
    from lepton_nn.bench.train_worker import PEERS
    return BACKENDS + PEERS + ("peers",)


def _bench_models():
    from lepton_nn.bench.train_worker import MODELS
    return tuple(MODELS)


def _bench_cases():
    from lepton_nn.bench.kernel_cases import CASES_BY_NAME
    return tuple(CASES_BY_NAME)


# --------------------------------------------------------------------------- commands
def _gradcheck(args):
    from lepton_nn import kernels, tour
    cases = [c for c in tour.CASES if args.op in (None, c.op)]
    if args.backend == "all":
        names = kernels.available_backends()
    else:
        kernels.get(args.backend)
        names = [args.backend]
    passed = tour.run(cases, names, method=args.method)
    print(f"\n{'all passed' if passed else 'FAILURES above'}: {len(cases)} case(s) on backend(s) {', '.join(names)}")
    return 0 if passed else 1


def _backends(args):
    from lepton_nn import kernels
    for info in kernels.backends():
        print(info)
    print(f"active: {kernels.active_name()}")
    return 0


def _bench(args):
    # Each flag runs one benchmark; with none of --train, --profile, --shakespeare, --rl: --kernels.
    backends = args.backend.split(",") if args.backend != "all" else None
    common = dict(json_path=args.json, rounds=args.rounds, compare=args.compare)
    status, plotted = 0, {}
    if args.model and not (args.train or args.profile):
        raise ValueError("--model chooses the CNN of --train (and --profile): give --train")
    if args.plot:
        if args.profile or not (args.kernels or args.train or not (args.shakespeare or args.rl)):
            raise ValueError("--plot draws the tables of --kernels and --train (not --profile, --shakespeare or --rl): "
                             "give one of them")
        from lepton_nn import plots
        plots.pyplot()  # a missing extra is reported now, not after the benchmark
    if args.train or args.profile:  # MNIST found (or downloaded) now: a missing copy is reported before
        from lepton_nn.data import mnist  # --shakespeare, --rl or --kernels have run
        mnist.find_files(args.data)
    if args.shakespeare:
        from lepton_nn.bench import gpt as gpt_bench
        status = gpt_bench.main(backends, steps=args.steps or 60, data=args.text_data, progress=_progress(""),
                                **common)
    if args.rl:
        from lepton_nn.bench import rl as rl_bench
        status = rl_bench.main(backends, steps=args.steps or 300, threads=args.threads, progress=_progress(""),
                               **common) or status
    if args.kernels or not (args.train or args.profile or args.shakespeare or args.rl):
        from lepton_nn.bench import kernels as kernel_bench
        cases = args.case.split(",") if args.case else None
        status, plotted["kernels"] = _keeping_json(kernel_bench.main, args.plot, backends, repeat=args.repeat,
                                                   cases=cases, progress=_progress("timing"), **common)
    if args.train or args.profile:
        from lepton_nn.bench import train as train_bench
        options = dict(steps=args.steps or 200, data=args.data, threads=args.threads, progress=_progress(""),
                       model=args.model or "article")
        if args.profile:
            status = train_bench.profile_main(backends, json_path=args.json, **options) or status
        else:
            done, plotted["train"] = _keeping_json(train_bench.main, args.plot, backends, full=args.full, **options,
                                                   **common)
            status = done or status
    if args.plot:
        plots.bench(args.plot, **plotted)
        print(f"\nthe tables plotted to {args.plot}")
    return status


def _keeping_json(main, plot, *args, json_path=None, **kwargs):
    """(status, the run's JSON data or None): a benchmark's main run; with --plot, the JSON it wrote
    is read back, from --json or from a temporary file when none was asked for."""
    if not plot:
        return main(*args, json_path=json_path, **kwargs), None
    import json
    import tempfile
    with tempfile.TemporaryDirectory(prefix="lepton_nn_plot_") as tmp:
        path = json_path or str(Path(tmp) / "bench.json")
        status = main(*args, json_path=path, **kwargs)
        with open(path) as f:
            return status, json.load(f)


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
                verbose=verbose, plot=args.plot)
    return 0


def _mnist_input_shape(model, path):
    """The model's input shape without the batch axis; it must hold one 28×28 image."""
    shape = tuple(model.input_shape[1:])
    if math.prod(n or 0 for n in shape) != 28 * 28:
        raise ValueError(f"model {path}: expected an input shape holding one 28×28 image (784 values), "
                         f"found {shape}")
    return shape


def _shakespeare(args):
    from lepton_nn import shakespeare
    _use_backend(args.backend)
    shakespeare.train(args.model, data_dir=args.data, iters=args.iters, seed=args.seed, save=args.save,
                      progress=sys.stdout.isatty(), temperature=args.temperature, top_k=args.top_k,
                      sample_length=args.length)
    return 0


def _transfer(args):
    from lepton_nn import transfer
    backend = _use_backend(args.backend)
    budget = transfer.Budget(pretrain_epochs=args.pretrain_epochs, head_epochs=args.head_epochs,
                             finetune_epochs=args.finetune_epochs)
    print(f"transfer learning on MNIST, digits 0–4 → 5–9: seed {args.seed}, backend {backend}")
    transfer.run(data=args.data, fractions=[p / 100 for p in args.labels], budget=budget, seed=args.seed,
                 save=args.save)
    return 0


def _rl(args):
    from lepton_nn import rl
    backend = _use_backend(args.backend)
    try:
        rl.gymnasium()  # missing extras are reported now, not after the training
        if args.plot:
            from lepton_nn import plots
            plots.pyplot()
    except ImportError as err:
        print(f"lepton-nn rl: {err}", file=sys.stderr)
        return 2
    config = rl.CONFIGS[args.algo]()
    if args.episodes:
        config.episodes = args.episodes
    print(f"{args.algo} on {rl.ENV_ID}: seed {args.seed}, at most {config.episodes} episodes, backend {backend}; "
          f"solved at a mean return ≥ {rl.SOLVED_MEAN:g} over {rl.SOLVED_WINDOW} consecutive episodes")
    run = rl.TRAINERS[args.algo](args.seed, config, progress=sys.stdout.isatty())
    print(run.summary())
    if args.plot:
        rl.plot_returns(run.returns, args.plot, title=f"{args.algo} on {rl.ENV_ID}, seed {args.seed}")
        print(f"returns plotted to {args.plot}")
    if args.save:
        rl.save_policy(run, args.save)
        print(f"network saved to {args.save}")
    return 0


def _evaluate(args):
    from lepton_nn import keras, train
    from lepton_nn.data import mnist
    backend = _use_backend(args.backend)
    if args.plot:
        from lepton_nn import plots
        plots.pyplot()  # a missing extra is reported before any work
    model = keras.models.load_model(args.model)
    shape = _mnist_input_shape(model, args.model)
    _, (x_test, y_test) = mnist.load_data(args.data)
    images = x_test
    x_test = train.preprocess(x_test).reshape((-1,) + shape)
    loss = model.evaluate(x_test, y_test, batch_size=256, verbose=0) if model.compiled else None
    loss = loss[0] if isinstance(loss, list) else loss
    probabilities = model.predict(x_test, batch_size=256)
    print(f"model {args.model} on the {len(x_test):,} MNIST test images (backend {backend})")
    train.report(y_test, probabilities, loss=loss, name=f"model {args.model}")
    if args.plot:
        plots.evaluation(y_test, probabilities, images, args.plot, title=f"model {args.model} on the MNIST test set")
        print(f"\nconfusion matrix and worst mistakes plotted to {args.plot}")
    return 0


def _predict(args):
    import numpy as np

    from lepton_nn import keras
    from lepton_nn.data import images
    from lepton_nn.train import check_finite
    _use_backend(args.backend)
    model = keras.models.load_model(args.model, compile=False)
    shape = _mnist_input_shape(model, args.model)
    image = images.load_image(args.image, invert=args.invert).reshape(shape)
    probabilities = model.predict(image)
    check_finite(f"model {args.model} on {args.image}: the output probabilities", probabilities)
    best = int(np.argmax(probabilities))
    print(f"{args.image}: {best}  (probability {probabilities[best]:.4f})")
    for k in np.argsort(probabilities)[::-1][:3]:
        print(f"  {int(k)}: {probabilities[k]:.4f}")
    return 0


def _export(args):
    from lepton_nn import keras, onnx
    model = keras.models.load_model(args.model, compile=False)
    proto = onnx.export(model, args.onnx)  # checked by onnx.checker before it is written
    ops = ", ".join(node.op_type for node in proto.graph.node)
    print(f"model {args.model} written to {args.onnx} (ONNX opset {onnx.OPSET}, input {model.input_shape}): {ops}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="lepton-nn", description="lepton_nn: read, verify and benchmark a neural-network engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gradcheck", help="check every op's gradient against finite differences (float64), "
                                         "on every available backend")
    p.add_argument("--op", type=one_of(_ops), help="only this op (e.g. conv2d, max_pool2d, cross_entropy)")
    p.add_argument("--backend", type=one_of(BACKENDS + ("all",)), default="all",
                   help="numpy, numba, c, or all (default: all available)")
    p.add_argument("--method", type=one_of(("central", "taylor")), default="central",
                   help="central differences with kinks checked (default), or the Taylor test: the order of "
                        "the linear model's residual (lepton_nn/gradcheck.py)")
    p.set_defaults(run=_gradcheck)

    p = sub.add_parser("backends", help="list the kernel backends and whether they are available")
    p.set_defaults(run=_backends)

    p = sub.add_parser("bench", help="benchmarks: --kernels (the default) times every kernel on every backend and PyTorch")
    p.add_argument("--kernels", action="store_true", help="the kernel table: ms, GFLOP/s, %% of GEMM, speedups, targets")
    p.add_argument("--backend", type=names_of(_bench_runs, everything="all"), default="all",
                   help="comma-separated runs: lepton_nn backends (numpy, numba, c) and peers (torch; with --train "
                   "also torch-cl, tf-keras, jax, or 'peers'); default all available")
    p.add_argument("--case", type=names_of(_bench_cases),
                   help="--kernels: comma-separated cases to time (default all; names in docs/benchmarks.md)")
    p.add_argument("--repeat", type=positive_int, default=50,
                   help="timed runs per kernel and round, at most (stops after ~1 s); default 50")
    p.add_argument("--rounds", type=positive_int, default=3, help="run everything round-robin this many times: cells show "
                   "the median and min–max over rounds, ratios are medians of per-round ratios; default 3")
    p.add_argument("--json", metavar="FILE", type=writable_path,
                   help="also write every figure, every round, to FILE as JSON")
    p.add_argument("--compare", metavar="OLD.json", type=existing_file,
                   help="compare with an earlier run's --json: each figure's change, flagged when it is beyond "
                   "the spread of the two runs")
    p.add_argument("--train", action="store_true", help="train and evaluate the classic MNIST CNN (or --model's) "
                   "per backend and in each peer framework, each in a fresh process: ms/step, images/s, GFLOP/s, "
                   "peak RSS, first step")
    p.add_argument("--model", type=one_of(_bench_models), help="--train, --profile: article (default), the classic "
                   "Keras MNIST CNN, or deep: Conv2D 32 → MaxPool → Conv2D 64 → MaxPool (3×3, padding same) → "
                   "Dense 128 → Dense 10")
    p.add_argument("--profile", action="store_true", help="with --train: where a step's time goes, per op and kernel")
    p.add_argument("--steps", type=positive_int,
                   help="--train: timed training steps of batch 64 (default 200); --shakespeare: timed iterations "
                        "(default 60); --rl: timed calls per figure (default 300)")
    p.add_argument("--shakespeare", action="store_true", help="iterations of nanoGPT's baby-GPT recipe per backend "
                   "and in PyTorch, each in a fresh process: ms/iteration, ratio to PyTorch")
    p.add_argument("--rl", action="store_true", help="REINFORCE and DQN updates (lepton-nn rl's networks) per "
                   "backend and in PyTorch, each in a fresh process: updates/s, ratio to PyTorch")
    p.add_argument("--text-data", metavar="DIR", type=shakespeare_dir, help="--shakespeare: directory with "
                   "input.txt (default: $LEPTON_NN_DATA, the cache, or a download)")
    p.add_argument("--full", action="store_true", help="--train: also the whole 5-epoch run per framework, for its "
                                                       "peak memory (slow)")
    p.add_argument("--data", metavar="DIR", type=mnist_dir, help="--train: directory with the four MNIST files "
                   "(default: $LEPTON_NN_DATA, the cache, or a download)")
    p.add_argument("--threads", type=positive_int,
                   help="--train, --rl: pin every run's threads to N (default: each framework's own default)")
    p.add_argument("--plot", metavar="PNG", type=writable_path, help="--kernels, --train: draw the tables as bar "
                   "charts against PyTorch in this PNG (the extra .[plot])")
    p.set_defaults(run=_bench)

    p = sub.add_parser("train", help="train the classic Keras MNIST CNN, then report test accuracy, per-class "
                                     "precision/recall/F1 and the confusion matrix")
    p.add_argument("--epochs", type=positive_int, default=5, help="default 5")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default 64")
    p.add_argument("--backend", type=one_of(BACKENDS),
                   help="kernel backend: numpy, numba or c (default: the fastest available)")
    p.add_argument("--data", metavar="DIR", type=mnist_dir, help="directory with the four MNIST files "
                   "(default: $LEPTON_NN_DATA, the cache, or a download)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="random seed (initialisation, shuffling); default 0")
    p.add_argument("--save", metavar="PATH", type=writable_path, help="write the trained model to PATH (.lnn)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2),
                   help="1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2)")
    p.add_argument("--plot", metavar="PNG", type=writable_path, help="draw loss and accuracy per epoch, training and "
                   "on the test set (evaluated after each epoch, never used to train), in this PNG (the extra .[plot])")
    p.set_defaults(run=_train)

    p = sub.add_parser("shakespeare", help="train a character-level model of Shakespeare (nanoGPT's baby GPT, "
                                           "or a char LSTM), report its validation loss and print a sample")
    p.add_argument("--model", type=one_of(("gpt", "lstm")), default="gpt", help="gpt (default) or lstm")
    p.add_argument("--iters", type=positive_int, default=2000, help="training iterations; default 2000 (the recipe)")
    p.add_argument("--backend", type=one_of(BACKENDS),
                   help="kernel backend: numpy, numba or c (default: the fastest available)")
    p.add_argument("--data", metavar="DIR", type=shakespeare_dir, help="directory with input.txt (default: "
                   "$LEPTON_NN_DATA, the cache, or a download)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed; default 0")
    p.add_argument("--save", metavar="PATH", type=writable_path, help="write the trained model to PATH (.lnn)")
    p.add_argument("--temperature", type=positive_number, default=0.8, help="sampling temperature; default 0.8")
    p.add_argument("--top-k", type=positive_int, help="sample among the k likeliest characters only")
    p.add_argument("--length", type=positive_int, default=300, help="characters to sample; default 300")
    p.set_defaults(run=_shakespeare)

    p = sub.add_parser("transfer", help="transfer learning, the classic Keras example: pretrain the CNN on digits "
                                        "0–4, freeze its features, train a new head on 5–9, fine-tune, and compare "
                                        "with training from scratch at 1 %%, 10 %% and 100 %% of the labels")
    p.add_argument("--data", metavar="DIR", type=mnist_dir, help="directory with the four MNIST files "
                   "(default: $LEPTON_NN_DATA, the cache, or a download)")
    p.add_argument("--labels", metavar="PERCENT", type=percentage, nargs="+", default=[1, 10, 100],
                   help="shares of the 5–9 training labels to run with; default 1 10 100")
    p.add_argument("--pretrain-epochs", type=positive_int, default=5, help="on digits 0–4; default 5")
    p.add_argument("--head-epochs", type=positive_int, default=2,
                   help="new head on frozen features, in epochs of the full 5–9 set; default 2")
    p.add_argument("--finetune-epochs", type=positive_int, default=2,
                   help="everything unfrozen at a tenth of the learning rate; default 2")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed; default 0")
    p.add_argument("--save", metavar="PATH", type=writable_path, default="digits_0_4.lnn",
                   help="where the pretrained model goes; default digits_0_4.lnn")
    p.add_argument("--backend", type=one_of(BACKENDS),
                   help="kernel backend: numpy, numba or c (default: the fastest available)")
    p.set_defaults(run=_transfer)

    p = sub.add_parser("rl", help="reinforcement learning on Gymnasium's CartPole-v1 (the extra .[rl]): REINFORCE "
                                  "with a baseline or DQN, until solved (mean return ≥ 475 over 100 episodes)")
    p.add_argument("--algo", type=one_of(("reinforce", "dqn")), default="reinforce", help="reinforce (default) or dqn")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="random seed (initialisation, sampling, the environment); default 0")
    p.add_argument("--episodes", type=positive_int,
                   help="the budget: stop here if not solved before (default: reinforce 2000, dqn 1000)")
    p.add_argument("--backend", type=one_of(BACKENDS),
                   help="kernel backend: numpy, numba or c (default: the fastest available)")
    p.add_argument("--plot", metavar="PNG", type=writable_path,
                   help="write the return per episode and its 100-episode mean to this PNG (the extra .[plot])")
    p.add_argument("--save", metavar="PATH", type=writable_path, help="write the trained network to PATH (.lnn)")
    p.set_defaults(run=_rl)

    p = sub.add_parser("evaluate", help="evaluate a saved model (.lnn) on the MNIST test set")
    p.add_argument("--model", required=True, metavar="PATH", type=existing_file)
    p.add_argument("--data", metavar="DIR", type=mnist_dir, help="directory with the four MNIST files")
    p.add_argument("--backend", type=one_of(BACKENDS), help="kernel backend (default: the fastest available)")
    p.add_argument("--plot", metavar="PNG", type=writable_path, help="draw the confusion matrix and the 16 "
                   "most confident mistakes in this PNG (the extra .[plot])")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("predict", help="classify one image (any Pillow reads, made grey and 28×28; or a .npy "
                                       "28×28 array) with a saved model")
    p.add_argument("--model", required=True, metavar="PATH", type=existing_file)
    p.add_argument("image", metavar="IMAGE", type=image_file,
                   help="an image Pillow reads (.png, .jpg, …; the extra .[images]), made 8-bit grey and resized to "
                        "28×28, or a .npy (28, 28) array")
    p.add_argument("--invert", action="store_true", help="dark digit on a light background: invert it first")
    p.add_argument("--backend", type=one_of(BACKENDS), help="kernel backend (default: the fastest available)")
    p.set_defaults(run=_predict)

    p = sub.add_parser("export", help="write a saved model (.lnn) as ONNX (the extra .[onnx]), for ONNX Runtime "
                                      "and other ONNX tools; lepton_nn.onnx.load reads it back")
    p.add_argument("--model", required=True, metavar="PATH", type=existing_file)
    p.add_argument("--onnx", required=True, metavar="OUT", type=writable_path, help="the .onnx file to write")
    p.set_defaults(run=_export)
    return parser


def main(argv=None):
    """Run the command; returns the exit status (2 for a bad argument or a failure, after a
    message on stderr) rather than exiting, so it can be called from Python and tests."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # argparse has printed the usage and the error (or --help)
        return done.code
    try:
        return args.run(args)
    # OSError: missing data files, failed download; ImportError: a missing optional extra, which the message names
    except (ValueError, RuntimeError, OSError, ImportError) as err:
        print(f"lepton-nn {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
