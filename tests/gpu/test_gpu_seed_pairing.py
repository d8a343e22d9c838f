"""Seed pairing on a GPU (issue #12): building the synthesizer on a CUDA device leaves every
CUDA generator alone, so an SG run draws the same dropout masks as its BPTT twin."""

import pytest
import torch

from altgrad_triton.run import build
from tests.helpers import tiny_corpus, tiny_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SYNTHESIZERS = {
    "elementwise": {"enabled": True, "synthesizer": "elementwise", "hidden": 6},
    "mlp": {"enabled": True, "synthesizer": "mlp", "hidden": 8, "dropout": 0.5},
}


@pytest.mark.parametrize("kind", list(SYNTHESIZERS))
def test_building_a_synthesizer_on_cuda_leaves_the_cuda_rngs_alone(tmp_path, kind):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", synthetic=SYNTHESIZERS[kind])
    device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(r.run.seed)
    model = build.build_model(r, vocab_size=17).to(device)
    cuda_before, cpu_before = torch.cuda.get_rng_state_all(), torch.get_rng_state()
    boundary, generator = build.build_synthesizer(r, model, device, rank=0)
    cuda_after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(a, b) for a, b in zip(cuda_before, cuda_after, strict=True))
    assert torch.equal(torch.get_rng_state(), cpu_before)
    assert generator.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in boundary.synthesizer.parameters())
    # the same initial weights as a build on the CPU: one stream, whatever the device
    on_cpu, _ = build.build_synthesizer(r, model.cpu(), torch.device("cpu"), rank=0)
    for a, b in zip(
        boundary.synthesizer.parameters(), on_cpu.synthesizer.parameters(), strict=True
    ):
        assert torch.equal(a.cpu(), b)
