"""Checked downloads with one deadline, for every dataset lepton_nn can fetch (mnist.py,
shakespeare.py): each file comes from the first URL that serves bytes with its published MD5,
is written atomically into the cache, and the whole download must finish within a deadline,
past which DownloadError says which URLs were tried and how to get the files by hand.
"""
import hashlib
import math
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

from lepton_nn.fileio import atomic_write

DEADLINE_ENV_VAR = "LEPTON_NN_DOWNLOAD_DEADLINE"


class DownloadError(OSError):
    """Every URL failed for some file (no network, bad data everywhere, or the deadline passed)."""


def cache_dir(dataset):
    """Where `dataset` is cached: $XDG_CACHE_HOME/lepton_nn/DATASET, or ~/.cache/lepton_nn/DATASET."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lepton_nn" / dataset


def fetch(url, timeout):
    """GET `url` and return the body."""
    request = urllib.request.Request(url, headers={"User-Agent": "lepton_nn"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def fetch_within(fetch, url, seconds):
    """fetch(url, timeout), given up on after `seconds`. urllib's timeout bounds each socket
    operation, not the whole request (nor the DNS lookup, nor a server that trickles bytes),
    so the request runs in a daemon thread that is abandoned when time is up."""
    result = {}

    def work():
        try:
            result["data"] = fetch(url, timeout=seconds)
        except Exception as e:
            result["error"] = e
    thread = threading.Thread(target=work, daemon=True, name=f"lepton_nn download {url}")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no complete answer within {seconds:.1f} s")
    if "error" in result:
        raise result["error"]
    return result["data"]


def deadline_seconds(default):
    """`default`, or the number in $LEPTON_NN_DOWNLOAD_DEADLINE (seconds, finite, > 0)."""
    text = os.environ.get(DEADLINE_ENV_VAR)
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:  # also refuses nan
        raise ValueError(f"{DEADLINE_ENV_VAR}: expected a finite number of seconds > 0, found {text!r}")
    return seconds


def download(files, directory, seconds, what, by_hand, fetch=fetch):
    """Fetch each file into `directory`, all within `seconds`; each request gets only the time
    that remains. files: {name: (md5, [url, ...])}, the URLs tried in order. `what` names the
    dataset in messages; `by_hand` is the manual-download text DownloadError ends with."""
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    for name, (md5, urls) in files.items():
        failures = []
        for url in urls:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failures.append(f"{url}: not tried, the deadline had passed")
                continue
            print(f"lepton_nn: downloading {url}", file=sys.stderr)
            try:
                data = fetch_within(fetch, url, remaining)
            except Exception as e:  # network errors come in many types (URLError, timeout, ...)
                failures.append(f"{url}: {type(e).__name__}: {e}")
                continue
            digest = hashlib.md5(data).hexdigest()
            if digest != md5:
                failures.append(f"{url}: MD5 mismatch: expected {md5}, found {digest} ({len(data)} bytes)")
                continue
            with atomic_write(directory / name) as f:
                f.write(data)
            break
        else:
            raise DownloadError(
                f"{what} download failed: could not get {name} from any URL within the download "
                f"deadline of {seconds:g} s ({DEADLINE_ENV_VAR} changes it):\n  "
                + "\n  ".join(failures) + "\n" + by_hand)
