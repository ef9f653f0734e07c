"""float32 accuracy of the torch SSD at large decays (issue 10 item 7): the norm-wise relative error against the
float64 materialized matrix stays <= 1e-4 wherever |A|·Δ <= 10 per step, on long rows, at chunk lengths 64 and 256,
with and without sequence boundaries. The measurement is benchmarks/ssd_accuracy_curve.py (its README table); its
float64 reference (the float64 torch path) is checked here against the matrix."""

import runpy

import pytest

from conftest import REPO_ROOT
from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import ids_from_lengths
from ssd_oracle import ssd_oracle

pytestmark = pytest.mark.usefixtures("single_thread")

SEQLEN = 1024
CHUNK_SIZES = (64, 256)
TOL = 1e-4


@pytest.fixture(scope="module")
def curve():
    """The script's functions: random_inputs, float64_reference, relative_error, accuracy_curve."""
    return runpy.run_path(str(REPO_ROOT / "benchmarks" / "ssd_accuracy_curve.py"))


@pytest.mark.parametrize("decay", [0.01, 1.0, 10.0])
def test_float32_error_up_to_a_log_decay_of_10_per_step(curve, decay):
    inputs = curve["random_inputs"](SEQLEN, decay)
    y64 = ssd_oracle(*inputs)
    reference_error = curve["relative_error"](curve["float64_reference"](*inputs), y64)
    assert reference_error <= 1e-12  # the script's float64 reference
    reported = curve["accuracy_curve"](SEQLEN, CHUNK_SIZES, [decay])
    for chunk_size in CHUNK_SIZES:
        err = curve["relative_error"](ssd_bidirectional_torch(*inputs, chunk_size), y64)
        assert err <= TOL, f"|A|·Δ up to {decay}, chunk {chunk_size}: relative error {err:.2e}"
        # What the script prints differs by at most the error of its reference (triangle inequality).
        assert abs(reported[decay, chunk_size] - err) <= 2 * reference_error + 1e-15


def test_float32_error_with_sequence_boundaries(curve):
    """A packed row of long and short sequences at |A|·Δ up to 10: each sequence against its own float64 matrix."""
    lengths = [300, 1, 2, 500, 3, 218]
    inputs = curve["random_inputs"](sum(lengths), 10.0, seed=1)
    seq_idx = ids_from_lengths(lengths)[None]
    y64 = ssd_oracle(*inputs, seq_idx=seq_idx)
    for chunk_size in CHUNK_SIZES:
        err = curve["relative_error"](ssd_bidirectional_torch(*inputs, chunk_size, seq_idx=seq_idx), y64)
        assert err <= TOL, f"chunk {chunk_size}: relative error {err:.2e}"
