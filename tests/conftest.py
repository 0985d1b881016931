"""Shared fixtures. The real MNIST is prepared once per session in the default data directory
(offline path: the package index is reachable wherever pip works, CI included)."""

from compare import spin

spin.apply_defaults()  # first: the side-by-side runs' thread settings, before NumPy loads (as crosscheck does)

import fcntl  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from compare import data  # noqa: E402


@pytest.fixture(scope="session")
def mnist_dir():
    """A data directory holding the four verified MNIST files.

    The tests run in several processes (pytest-xdist): a lock file beside the data directory lets
    one of them fetch the files while the others wait, instead of all fetching at once."""
    data_dir = data.default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepared = data.prepare(data_dir, offline=True, log=lambda line: None)
    return prepared.raw_dir.parent.parent


@pytest.fixture(scope="session")
def mnist64(mnist_dir):
    return data.load_mnist(mnist_dir, dtype=np.float64, log=lambda line: None)


@pytest.fixture(scope="session")
def mnist32(mnist_dir):
    return data.load_mnist(mnist_dir, dtype=np.float32, log=lambda line: None)
