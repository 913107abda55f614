"""The docs' code runs: every ```python block in README.md and docs/*.md, and every `lepton-nn`
command line they show (issue 12). Files are found by glob when the tests are collected, so a
new doc is tested without an edit here.

Python blocks: one test per block, id `file:line` (the line of the opening fence). The blocks of
one file run in order in one namespace, as a reader runs a tutorial, each file in a fresh
namespace, working directory (a temporary one), random generator (seed 0) and backend choice
(the default), as a new program would. A test runs the earlier blocks of its file first if they
have not run yet (so `-k` can pick any block), and is skipped when one of them failed or was
skipped, naming it. Tracebacks point at the Markdown file and line.

Data. The runner sets LEPTON_NN_DATA (the variable load_data() reads) to a small MNIST: the
first 2,000 training and 1,000 test images of the files in LEPTON_NN_MNIST_DIR, so a block that
loads MNIST and trains runs as written, in seconds. Without LEPTON_NN_MNIST_DIR, LEPTON_NN_DATA
names a directory that does not exist, so load_data() fails at once (never a download) and the
test is skipped, saying so. A block that imports torch (or another optional peer) that is not
installed is skipped, too.

Claims and markers. A comment `# prints: TEXT` in a block says the block prints a line shaped
like TEXT: `...` stands for any text and every number for any number (the figures are those of
the run the docs describe, not of the small data). HTML comments on the lines just above a
fence, invisible in the rendered page, tell the runner more:

    <!-- doctest: check EXPR -->     after the block, EXPR (Python, in the file's namespace) is true:
                                     a floor that holds on the small data too (accuracy > 0.85)
    <!-- doctest: raises NAME -->    the block raises NAME (an exception class name, e.g. ValueError)
    <!-- doctest: skip REASON -->    the block is not run (a fragment, or a deliberate mistake)

Commands. Each `lepton-nn ...` line of a ```bash (sh, shell, console) block, and each inline
`lepton-nn ...` span, must parse with lepton_nn.cli.build_parser(), so a documented subcommand,
flag or name that does not exist fails. A span may be a synopsis: `[--op conv2d]` is parsed as
given and `numpy|numba|c` once per alternative; `...` is dropped. The files a command names are
examples (`/path/to/mnist`, `model.lnn`), so the parser's file checks are left out; every other
check (counts, backend, op and case names) runs as in the CLI, and flags must be spelled in full.
`<!-- doctest: skip -->` above a bash block leaves its commands out.

Run: LEPTON_NN_MNIST_DIR=../shared/data/mnist python -m pytest -q tests/test_docs.py
"""
import argparse
import contextlib
import io
import itertools
import os
import re
import shlex
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from lepton_nn import cli, kernels, rng
from lepton_nn.data import mnist, write_idx

ROOT = Path(__file__).resolve().parents[1]
SMALL_MNIST = {"train": 2000, "test": 1000}  # images per split handed to the docs' load_data()
OPTIONAL_PACKAGES = {"torch": ".[torch]", "tensorflow": ".[peers]", "jax": ".[peers]", "jaxlib": ".[peers]",
                     "onnx": ".[onnx]", "onnxruntime": ".[onnx]", "gymnasium": ".[rl]", "matplotlib": ".[plot]",
                     "PIL": ".[images]"}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}


def doc_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- reading Markdown
@dataclass
class Block:
    path: Path
    line: int        # the opening fence's line, 1-based
    end: int         # the closing fence's line
    language: str
    source: str      # dedented to the fence's indentation
    markers: list = field(default_factory=list)  # [(keyword, argument)] from <!-- doctest: ... -->

    @property
    def id(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def marker(self, keyword):
        return [argument for word, argument in self.markers if word == keyword]


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<language>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*doctest:\s*(?P<keyword>\w+)\s*(?P<argument>.*?)\s*-->\s*$")


def read_blocks(path):
    """Every fenced block of a Markdown file, with the doctest markers on the lines above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line[indent:] if len(line) - len(line.lstrip()) >= indent else line.lstrip()
                for line in lines[i + 1:end]]
        markers, above = [], i - 1
        while above >= 0 and (MARKER.match(lines[above]) or not lines[above].strip()):
            if lines[above].strip():
                found = MARKER.match(lines[above])
                markers.insert(0, (found["keyword"], found["argument"]))
            above -= 1
        blocks.append(Block(path, i + 1, end + 1, opening["language"].lower(), "\n".join(body) + "\n", markers))
        i = end + 1
    return blocks


def all_blocks(languages):
    return [b for path in doc_files() for b in read_blocks(path) if b.language in languages]


PYTHON_BLOCKS = all_blocks({"python", "py"})


# --------------------------------------------------------------------------- running Python blocks
@pytest.fixture(scope="session")
def docs_data_dir(tmp_path_factory):
    """(directory for LEPTON_NN_DATA, whether it holds MNIST): the small MNIST of the docstring."""
    source = os.environ.get("LEPTON_NN_MNIST_DIR")
    if not source or not os.path.isdir(source):
        return tmp_path_factory.getbasetemp() / "no-MNIST-set-LEPTON_NN_MNIST_DIR", False
    small = tmp_path_factory.mktemp("small-mnist")
    (x_train, y_train), (x_test, y_test) = mnist.load_data(source)
    n, m = SMALL_MNIST["train"], SMALL_MNIST["test"]
    for key, array in [("train_images", x_train[:n]), ("train_labels", y_train[:n]),
                       ("test_images", x_test[:m]), ("test_labels", y_test[:m])]:
        write_idx(small / mnist.FILES[key], array)
    return small, True


class FileRun:
    """One Markdown file being run: its namespace, working directory and global choices."""

    def __init__(self, workdir):
        self.namespace = {"__name__": "__main__"}
        self.workdir = workdir
        self.generator = np.random.default_rng(rng.DEFAULT_SEED)  # what a fresh process starts with
        self.backend = None                                       # None: the default
        self.outcomes = {}  # block index → None (it ran), NotRun (skipped) or the exception it raised


_runs = {}


class NotRun(Exception):
    """A block that could not run here (no MNIST, no torch): the test is skipped."""


def _prints_claims(source):
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type == tokenize.COMMENT]
    return [m["claim"].strip() for c in comments if (m := re.search(r"#\s*prints:\s*(?P<claim>.+)", c))]


NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"


def claim_pattern(claim):
    """The regex for a `# prints:` claim: `...` is any text, a number any number, a space any spaces."""
    parts = []
    for piece in re.split(r"(\.\.\.|\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?|\s+)", claim):
        if piece == "...":
            parts.append(".*?")
        elif piece[:1].isdigit():
            parts.append(NUMBER)
        elif piece.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


class _Tee(io.StringIO):
    """Keeps what a block prints and still shows it (pytest shows it when a test fails)."""

    def __init__(self, shown):
        super().__init__()
        self.shown = shown

    def write(self, text):
        self.shown.write(text)
        return super().write(text)


def _run(block, run, data_dir, has_mnist):
    """Run one block in its file's namespace; raise NotRun when it needs what is missing here."""
    if block.marker("skip"):
        raise NotRun(f"marked skip: {block.marker('skip')[0] or 'no reason given'}")
    # Padding with blank lines makes tracebacks name the Markdown line (and pytest show it).
    code = compile("\n" * block.line + block.source, str(block.path), "exec")
    expected = block.marker("raises")
    output = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(output):
            exec(code, run.namespace)
    except FileNotFoundError as err:
        if not has_mnist and str(data_dir) in str(err):
            raise NotRun("needs MNIST: set LEPTON_NN_MNIST_DIR to a directory with the four MNIST files") from err
        raise
    except ModuleNotFoundError as err:
        package = (err.name or "").split(".")[0]
        if package in OPTIONAL_PACKAGES:
            raise NotRun(f"needs {package} (pip install -e \"{OPTIONAL_PACKAGES[package]}\")") from err
        raise
    except Exception as err:
        if not expected or expected[0] not in [cls.__name__ for cls in type(err).__mro__]:
            raise
    else:
        assert not expected, f"{block.id}: the block should raise {expected[0]} (its doctest marker), but ran"
    printed = output.getvalue().splitlines()
    for claim in _prints_claims(block.source):
        shown = any(claim_pattern(claim).fullmatch(line.strip()) for line in printed)
        assert shown, (
            f"{block.id}: no printed line is shaped like the claim `# prints: {claim}`; printed:\n"
            + "\n".join(printed))
    for expression in block.marker("check"):
        holds = eval(compile(expression, f"<doctest check at {block.id}>", "eval"), run.namespace)
        assert holds, f"{block.id}: the check `{expression}` is false after the block"


def _attempt(block, run, data_dir, has_mnist):
    """Run a block: None, or what stopped it (NotRun, or the exception it raised)."""
    __tracebackhide__ = True  # pytest shows the Markdown lines, not this runner
    try:
        _run(block, run, data_dir, has_mnist)
    except Exception as err:  # NotRun included
        return err
    return None


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs(block, docs_data_dir, tmp_path_factory, monkeypatch):
    data_dir, has_mnist = docs_data_dir
    blocks = [b for b in PYTHON_BLOCKS if b.path == block.path]
    if block.path not in _runs:
        _runs[block.path] = FileRun(tmp_path_factory.mktemp(block.path.stem))
    run = _runs[block.path]
    monkeypatch.chdir(run.workdir)
    monkeypatch.setenv(mnist.ENV_VAR, str(data_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(run.workdir / "cache"))  # never the user's cache
    # The file's own generator and backend choice, restored to the session's afterwards.
    monkeypatch.setattr(rng, "_generator", run.generator)
    monkeypatch.setattr(kernels, "_active", run.backend)
    position = blocks.index(block)
    try:
        for index, earlier in enumerate(blocks[:position + 1]):
            if index not in run.outcomes:  # each block runs once, whichever test reaches it first
                run.outcomes[index] = _attempt(earlier, run, data_dir, has_mnist)
            why = run.outcomes[index]
            if earlier is not block and why is not None and not earlier.marker("skip"):
                verb = "was skipped" if isinstance(why, NotRun) else f"failed ({type(why).__name__})"
                pytest.skip(f"builds on {earlier.id}, which {verb}: {str(why).splitlines()[0]}")
        why = run.outcomes[position]
        if isinstance(why, NotRun):
            pytest.skip(str(why))
        if why is not None:
            raise why  # its own traceback, pointing into the Markdown file
    finally:
        run.generator, run.backend = rng.generator(), kernels._active


# --------------------------------------------------------------------------- command lines
@dataclass
class Command:
    where: str       # file:line
    argv: list       # the words after `lepton-nn`
    shown: str       # as written in the docs


def _after_lepton_nn(words):
    return words[words.index("lepton-nn") + 1:] if "lepton-nn" in words else None


def _shell_commands(block):
    """`lepton-nn` commands in a shell block: each line (continuations joined) split as the shell
    splits it (comments dropped; &&, ||, |, ; end a command)."""
    lines = block.source.splitlines()
    k = 0
    while k < len(lines):
        first, line = k, lines[k]
        while line.endswith("\\") and k + 1 < len(lines):
            k += 1
            line = line[:-1] + " " + lines[k]
        k += 1
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        for is_operator, group in itertools.groupby(words, key=lambda w: set(w) <= set("();<>|&")):
            argv = None if is_operator else _after_lepton_nn(list(group))
            if argv:
                yield Command(f"{block.path.relative_to(ROOT)}:{block.line + 1 + first}", argv, line.strip())


def _synopsis_variants(words):
    """A synopsis span's argument lists: brackets dropped, `a|b|c` once per alternative."""
    words = [w for w in (w.strip("[]") for w in words) if w and w != "..."]
    alternatives = [w.split("|") for w in words]
    return [[options[min(k, len(options) - 1)] for options in alternatives]
            for k in range(max(map(len, alternatives), default=1))]


def _inline_commands(path):
    """`lepton-nn` commands in inline code spans, outside fenced blocks."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for block in read_blocks(path):
        lines[block.line - 1:block.end] = [""] * (block.end - block.line + 1)
    text = "\n".join(lines)
    for span in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        argv = _after_lepton_nn(span.group(1).split())
        if argv:  # a bare `lepton-nn` names the program; it is not a command line
            line = text.count("\n", 0, span.start()) + 1
            for variant in _synopsis_variants(argv):
                yield Command(f"{path.relative_to(ROOT)}:{line}", variant, span.group(1))


def all_commands():
    commands = []
    for path in doc_files():
        for block in read_blocks(path):
            if block.language in SHELL_LANGUAGES and not block.marker("skip"):
                commands += _shell_commands(block)
        commands += _inline_commands(path)
    return commands


COMMANDS = all_commands()
PATH_TYPES = (cli.existing_file, cli.image_file, cli.mnist_dir, cli.writable_path)


@pytest.fixture(scope="module")
def parser():
    """cli.build_parser() with the checks that open files left out (the docs' paths are examples)."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for subparser in commands.choices.values():
        subparser.allow_abbrev = False  # the docs spell every flag out (`--epoch` is no flag of train)
        for option in subparser._actions:
            if option.type in PATH_TYPES:
                option.type = None
    return parser


def test_a_claim_checks_the_shape_of_a_line_not_its_figures():
    claim = claim_pattern("test accuracy: 98.76 % (9,876 of ...)")
    assert claim.fullmatch("test accuracy: 89.20 % (892 of 1,000 test images)")
    assert not claim.fullmatch("test loss: 0.31 % (892 of 1,000 test images)")


def test_a_flag_or_name_that_does_not_exist_fails_to_parse(parser):
    for argv in (["train", "--epoch", "5"], ["train", "--learning-rate", "0.1"], ["gradcheck", "--backend", "cuda"],
                 ["bench", "--case", "conv9"], ["fit"]):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_the_docs_show_commands_and_python_blocks():
    """The discovery above finds what is there (an empty list would pass every test vacuously)."""
    assert len(PYTHON_BLOCKS) >= 5 and len(COMMANDS) >= 10
    assert any(c.argv[:1] == ["gradcheck"] for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where} {' '.join(c.argv)}")
def test_documented_command_parses(command, parser):
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser.parse_args(command.argv)
    except SystemExit:  # argparse has written its usage and the error
        pass
    if errors.getvalue():
        pytest.fail(f"{command.where}: `{command.shown}` does not parse: {errors.getvalue().splitlines()[-1]}",
                    pytrace=False)
