"""float32 accuracy of the torch SSD at large decays (issue 10 item 7): the norm-wise relative error against the
float64 materialized matrix stays <= 1e-4 wherever |A|·Δ <= 10 per step, on long rows, at chunk lengths 64 and 256,
with and without sequence boundaries. The measurement is benchmarks/ssd_accuracy_curve.py (its README table)."""

import pytest
import torch
from glue_test_helpers import script_function

from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import ids_from_lengths, spans
from test_ssd_oracle import apply_matrix, materialized_matrix, random_ssd_inputs

pytestmark = pytest.mark.usefixtures("single_thread")

SEQLEN = 1024
CHUNK_SIZES = (64, 256)
TOL = 1e-4


@pytest.fixture(scope="module")
def curve():
    """The script's functions: random_inputs, materialized_ssd_float64, relative_error."""
    return {name: script_function("ssd_accuracy_curve", name)
            for name in ("random_inputs", "materialized_ssd_float64", "relative_error")}


@pytest.mark.parametrize("ngroups", [1, 2])
def test_the_float64_reference_matches_the_loop_oracle(curve, ngroups):
    """The vectorized float64 reference of the script against the explicit products of test_ssd_oracle."""
    inputs = random_ssd_inputs(2, 13, 4, 3, ngroups, 5, seed=4)
    expected = apply_matrix(materialized_matrix(*inputs[1:]), inputs[0])
    assert (curve["materialized_ssd_float64"](*inputs) - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("decay", [0.01, 1.0, 10.0])
def test_float32_error_up_to_a_log_decay_of_10_per_step(curve, decay):
    inputs = curve["random_inputs"](SEQLEN, decay)
    y64 = curve["materialized_ssd_float64"](*inputs)
    y_float64_path = ssd_bidirectional_torch(*(t.double() for t in inputs), 64)
    assert curve["relative_error"](y_float64_path, y64) <= 1e-12  # the reference and the float64 path agree
    for chunk_size in CHUNK_SIZES:
        err = curve["relative_error"](ssd_bidirectional_torch(*inputs, chunk_size), y64)
        assert err <= TOL, f"|A|·Δ up to {decay}, chunk {chunk_size}: relative error {err:.2e}"


def test_float32_error_with_sequence_boundaries(curve):
    """A packed row of long and short sequences at |A|·Δ up to 10: each sequence against its own float64 matrix."""
    lengths = [300, 1, 2, 500, 3, 218]
    inputs = curve["random_inputs"](sum(lengths), 10.0, seed=1)
    y64 = torch.cat([curve["materialized_ssd_float64"](*(t if t.dim() == 1 else t[:, s:e] for t in inputs))
                     for s, e in spans(lengths)], dim=1)
    seq_idx = ids_from_lengths(lengths)[None]
    for chunk_size in CHUNK_SIZES:
        err = curve["relative_error"](ssd_bidirectional_torch(*inputs, chunk_size, seq_idx=seq_idx), y64)
        assert err <= TOL, f"chunk {chunk_size}: relative error {err:.2e}"
