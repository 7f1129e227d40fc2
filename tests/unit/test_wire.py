"""Acting weights on the wire (``wm_ray.actors.wire``): packed, pickled and unpacked, every
tensor comes back with its dtype, shape and bytes, whatever numpy can represent."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from wm_ray.actors.wire import WireTensor, pack, unpack


def test_every_dtype_and_nesting_survives_the_wire_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    weights = {
        "net": {
            "w": torch.randn(3, 4, generator=g),
            "w_t": torch.randn(4, 3, generator=g).t(),  # not contiguous
            "bf16": torch.randn(5, generator=g).to(torch.bfloat16),
            "half": torch.randn(2, 2, generator=g).half(),
            "fp8": torch.randn(6, generator=g).to(torch.float8_e4m3fn),
            "steps": torch.tensor(7),
            "mask": torch.tensor([True, False]),
        },
        "parts": [torch.arange(3), 2.5, "name", np.ones(2)],
        "pair": (torch.zeros(1), None),
    }
    packed = pack(weights)
    assert not any(isinstance(v, torch.Tensor) for v in packed["net"].values())
    assert packed["net"]["bf16"].data.dtype == np.uint16  # numpy has no bfloat16
    back = unpack(pickle.loads(pickle.dumps(packed)))
    for key, value in weights["net"].items():
        got = back["net"][key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert torch.equal(_bytes(got), _bytes(value)), key
    assert torch.equal(back["parts"][0], torch.arange(3))
    assert back["parts"][1:3] == [2.5, "name"] and isinstance(back["parts"][3], np.ndarray)
    assert isinstance(back["pair"], tuple) and back["pair"][1] is None


def test_unpacked_tensors_load_from_read_only_arrays_without_a_warning() -> None:
    data = np.arange(4, dtype=np.float32)
    data.setflags(write=False)  # as ray.get maps arrays from the object store
    module = torch.nn.Linear(2, 2, bias=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.load_state_dict(unpack({"weight": WireTensor("float32", data.reshape(2, 2))}))
    assert torch.equal(module.weight.detach().flatten(), torch.arange(4.0))


def test_plain_tensors_pass_unpack_unchanged_and_an_unknown_dtype_is_refused() -> None:
    raw = {"w": torch.ones(2)}
    assert unpack(raw)["w"] is raw["w"]
    with pytest.raises(ValueError, match="unknown torch dtype 'float99'"):
        unpack({"w": WireTensor("float99", np.zeros(1))})


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)
