"""The operators (``wm_ray.get_operator``): for every registered family, raw inputs (PIL
images, numpy arrays of another size, gray or float, torch tensors, lists of frames, actions)
become what the family's real agent takes, at its test size, and equal what the agent itself
computes from replay-style inputs; wrong shapes, types and values are refused naming what is
valid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import wm_ray
from wm_ray import registry
from wm_ray.config_io import save_config
from wm_ray.conformance import family_config, spaces
from wm_ray.envs.base import resize_image
from wm_ray.factory import create_model
from wm_ray.operators import OperatorError, get_operator

FAMILIES = registry.list_models()
SIDE = 16
RNG = np.random.default_rng(0)


def _build(name: str) -> tuple[object, object]:
    """The family's agent at test size over all its observation kinds, and its operator."""
    spec = registry.get_model_spec(name)
    caps = spec.capabilities
    obs_space, act_space = spaces(caps.observations, caps.actions[0])
    agent = create_model(name, obs_space, act_space, family_config(spec))
    return agent, get_operator(name, agent=agent)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> tuple[str, object, object]:
    agent, op = _build(request.param)
    return request.param, agent, op


def _pil(side: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    array = RNG.integers(0, 256, (side, side, channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def _inputs(op: object, n: int = 1) -> dict[str, object]:
    """``vector=`` for ``n`` envs where the obs space has a vector."""
    size = op.vector_size  # type: ignore[attr-defined]
    if not size:
        return {}
    return {"vector": [0.5] * size if n == 1 else np.zeros((n, size))}


def test_policy_acts_on_raw_images(family: tuple[str, object, object]) -> None:
    _, agent, op = family
    if op.image_shape is None:
        pytest.skip("no image observation")
    raw = [
        _pil(32),  # a larger PIL image, resized
        _pil(SIDE, "L"),  # gray PIL
        RNG.random((SIDE, SIDE)),  # float gray in [0, 1]
        torch.randint(0, 256, (SIDE, SIDE, 4), dtype=torch.uint8),  # RGBA tensor
    ]
    for image in raw:
        obs = op.observation(image=image, **_inputs(op))
        assert obs["image"].shape == (1, SIDE, SIDE, 3) and obs["image"].dtype == np.uint8
        assert obs["is_first"].tolist() == [True]
        _, action, _ = agent.policy(agent.init_policy(1), obs, "eval")
        assert op.action(action).shape[0] == 1  # a valid action of the space
    obs = op.observation(image=raw[:2], **_inputs(op, 2))
    _, action, _ = agent.policy(agent.init_policy(2), obs, "explore")
    assert len(action) == 2


def test_train_takes_the_batch_of_frame_lists(family: tuple[str, object, object]) -> None:
    _, agent, op = family
    t = agent.config.replay.seq_len
    frames = [[_pil(SIDE) for _ in range(t)], RNG.integers(0, 256, (t, SIDE, SIDE, 3), np.uint8)]
    vector = RNG.normal(size=(2, t, op.vector_size)) if op.vector_size else None
    if op.image_shape is None:
        frames = None
    actions = op.action(RNG.integers(0, 3, (2, t)) if op.discrete else np.zeros((2, t, 2)),
                        (2, t))  # fmt: skip
    batch = op.batch(frames, actions, reward=RNG.normal(size=(2, t)), vector=vector)
    assert batch["is_first"][:, 0].all() and not batch["is_first"][:, 1:].any()
    assert batch["reward"].dtype == np.float32 and batch["is_last"].shape == (2, t)
    _, metrics = agent.train(batch, agent.init_train(2))
    assert all(np.isfinite(v) for v in metrics.values())


def test_model_inputs_are_what_the_agent_computes(family: tuple[str, object, object]) -> None:
    name, agent, op = family
    images = RNG.integers(0, 256, (2, SIDE, SIDE, 3), np.uint8)
    if name == "random":
        with pytest.raises(OperatorError, match="random family has no networks"):
            op.model_input(images)
        return
    if name == "diamond":
        assert torch.equal(op.model_input(list(images)), agent._frames(images))
        assert op.model_input(images).shape == (2, 3, SIDE, SIDE)
    elif name == "iris":
        assert torch.equal(op.model_input(images / 255.0), agent._frames(images))
        assert float(op.model_input(images).max()) <= 1.0
    elif name == "jepa":
        assert torch.equal(op.model_input(images), agent._scale(agent._images(images)))
        assert agent.features(op.images([_pil(32), _pil(32)])).shape[0] == 2
    elif name == "genie":
        clip = RNG.integers(0, 256, (1, 6, SIDE, SIDE, 3), np.uint8)
        assert torch.equal(op.model_input(list(clip[0])), agent._clip(clip))
        assert op.clip(clip).shape == (1, agent.cfg.frames, SIDE, SIDE, 3)
        assert op.model_action(3).tolist() == [3]
    else:  # the RSSM families: the encoder's input dict
        inputs = op.model_input(images, **_inputs(op, 2))
        assert inputs["image"].dtype == torch.uint8 and inputs["image"].shape == (2, SIDE, SIDE, 3)
        encoder = agent.wm.encoder  # PlaNet's reduces the bits of the pixels first
        prepared = encoder.prepare(inputs, noise=False) if name == "planet" else inputs
        assert encoder(prepared).shape[0] == 2
        width = op.model_action([0, 1] if op.discrete else [[0.5, -1.0]] * 2)
        assert width.shape == (2, op.num_actions) and width.dtype == torch.float32
    if name in ("diamond", "iris"):
        assert op.model_action([0, 2]).tolist() == [0, 2]
    # to_pixels inverts the model space, as the agents show frames
    space = op.model_input(list(images), **(_inputs(op, 2) if name != "genie" else {}))
    if isinstance(space, dict):
        space = space["image"].float() / 255.0 - 0.5
    if name == "genie":
        space = space.float() / 255.0
    assert np.array_equal(op.to_pixels(space).reshape(images.shape), images)


def test_dreams_start_from_raw_frames(family: tuple[str, object, object]) -> None:
    name, agent, op = family
    if not op.steppable:
        with pytest.raises(OperatorError, match="steppable families: diamond, genie, iris"):
            op.start_frames(_pil(SIDE))
        return
    start = op.start_frames([_pil(SIDE), _pil(40, "L")])
    assert start.shape == (2, SIDE, SIDE, 3) and start.dtype == np.uint8
    session, _ = agent.dream_reset(start)
    action = op.latent_action([0, 1]) if name == "genie" else op.action([1, 2])
    frame, reward, end = agent.dream_step(session, action)
    assert frame.shape == (2, SIDE, SIDE, 3) and reward.shape == end.shape == (2,)
    if name == "genie":
        with pytest.raises(OperatorError, match=r"latent action: .*\[0, 8\)"):
            op.latent_action(8)


def test_pixel_conversions_are_exact() -> None:
    _, op = _build("diamond")
    rgb = RNG.integers(0, 256, (SIDE, SIDE, 3), np.uint8)
    assert np.array_equal(op.images(Image.fromarray(rgb))[0], rgb)
    assert np.array_equal(op.images(torch.from_numpy(rgb))[0], rgb)
    levels = torch.from_numpy(rgb[..., :1] // 128 * 255).bfloat16() / 255  # 0.0 or 1.0 exactly
    assert np.array_equal(op.images(levels)[0, ..., 0], rgb[..., 0] // 128 * 255)
    assert np.array_equal(op.images(rgb / 255.0)[0], rgb)  # floats in [0, 1], rounded
    assert np.array_equal(op.images(rgb.astype(np.int64))[0], rgb)
    gray = rgb[..., 0]
    assert np.array_equal(op.images(gray)[0], np.repeat(gray[..., None], 3, -1))
    big = RNG.integers(0, 256, (64, 64, 3), np.uint8)
    assert np.array_equal(op.images(big)[0], resize_image(big, SIDE))  # the envs' resize
    stacked = op.frames([[rgb, rgb], [rgb, gray]])
    assert stacked.shape == (2, 2, SIDE, SIDE, 3)
    obs_space, act_space = spaces(("image",), "discrete")
    gray_space = {"image": obs_space["image"].__class__(0, 255, (SIDE, SIDE, 1), np.uint8)}
    gray_op = get_operator("iris", obs_space.__class__(gray_space), act_space)
    luma = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    assert np.array_equal(gray_op.images(rgb)[0, ..., 0], luma)
    pil_luma = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert np.abs(gray_op.images(Image.fromarray(rgb))[0, ..., 0] - pil_luma).max() == 0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("a frame", r"images: got str .*expected a numpy array, a torch tensor, a PIL image"),
        (np.zeros((SIDE, SIDE, 2), np.uint8), r"images: got ndarray of shape \(16, 16, 2\) .*"),
        (np.zeros((3, SIDE, SIDE), np.uint8), r"\(H, W, C\) channels-last.*x.permute\(1, 2, 0\)"),
        (np.full((SIDE, SIDE, 3), 2.0), r"float pixels must lie in \[0, 1\], got 2\.\.2"),
        (np.full((SIDE, SIDE, 3), 300), r"integer pixels must lie in 0..255, got 300..300"),
        (np.ones((SIDE, SIDE, 3), bool), "got a bool array"),
        (np.zeros((SIDE, 2 * SIDE, 3), np.uint8), "32 pixels.*non-square.*crop or resize"),
        (np.zeros((2, 2, SIDE, SIDE, 3), np.uint8), r"expected one image, a list of images"),
        ([], "got an empty list"),
    ],
)
def test_bad_images_are_refused_naming_what_is_valid(value: object, match: str) -> None:
    _, op = _build("diamond")
    with pytest.raises(OperatorError, match=match):
        op.images(value)


def test_bad_actions_observations_and_batches_are_refused() -> None:
    _, diamond = _build("diamond")
    for bad in (3, [0, -1], 1.5, "left", [True]):
        with pytest.raises(OperatorError, match=r"expected integers in \[0, 3\) \(Discrete\(3\)\)"):
            diamond.action(bad)
    assert diamond.action(2.0).tolist() == [2]
    with pytest.raises(OperatorError, match=r"expected of shape \(2, 4\) integers"):
        diamond.action(np.zeros((2, 3), np.int64), (2, 4))
    with pytest.raises(OperatorError, match="needs image="):
        diamond.observation(vector=[1.0])
    with pytest.raises(OperatorError, match="has no vector"):
        diamond.observation(image=_pil(SIDE), vector=[1.0])
    with pytest.raises(OperatorError, match=r"is_first: got shape \(3,\), expected \(1,\)"):
        diamond.observation(image=_pil(SIDE), is_first=[True, False, True])
    with pytest.raises(OperatorError, match=r"reward: got shape \(3,\), expected \(1, 2\)"):
        diamond.batch([_pil(SIDE)] * 2, reward=[1.0, 2.0, 3.0])
    with pytest.raises(OperatorError, match="sequences of different lengths"):
        diamond.frames([[_pil(SIDE)] * 2, [_pil(SIDE)] * 3])
    no_resize = get_operator("diamond", diamond.obs_space, diamond.act_space, resize=False)
    with pytest.raises(OperatorError, match=r"32x32 pixels, the model takes 16x16 \(resize=False"):
        no_resize.images(_pil(32))
    _, planet = _build("planet")
    for bad in ([0.5], [[2.0, 0.0]], "up"):
        with pytest.raises(OperatorError, match=r"expected 2 floats in \[-1, 1\] per action"):
            planet.action(bad)
    with pytest.raises(OperatorError, match=r"vector: got list of 3; expected 5 numbers"):
        planet.observation(image=_pil(SIDE), vector=[1.0, 2.0, 3.0])


def test_get_operator_builds_from_spaces_and_refuses_what_the_family_does() -> None:
    obs_space, act_space = spaces(("image",), "discrete")
    op = wm_ray.get_operator("IJEPA", obs_space, act_space)  # an alias; default config
    assert op.family == "jepa" and op.image_shape == (SIDE, SIDE, 3)
    assert "get_operator" in wm_ray.__all__ and wm_ray.OperatorError is OperatorError
    with pytest.raises(registry.UnknownNameError, match="did you mean 'diamond'"):
        get_operator("diamnod", obs_space, act_space)
    with pytest.raises(registry.UnsupportedError, match="diamond family does not support"):
        get_operator("diamond", obs_space, spaces(("image",), "continuous")[1])
    with pytest.raises(OperatorError, match="pass obs_space and act_space together"):
        get_operator("diamond", obs_space)
    agent, _ = _build("random")
    with pytest.raises(OperatorError, match="agent is a random agent"):
        get_operator("dreamer", agent=agent)


def test_get_operator_from_a_run_directory(tmp_path: Path) -> None:
    save_config(wm_ray.create_config("random", env="CartPole-v1"), tmp_path)
    op = get_operator("random", run=tmp_path)  # the spaces of the run's env
    assert op.vector_size == 4 and op.image_shape is None and op.num_actions == 2
    assert op.observation(vector=[0.0, 0.1, 0.0, -0.1])["vector"].shape == (1, 4)
    with pytest.raises(OperatorError, match="is a random run"):
        get_operator("dreamer", run=tmp_path)


def test_the_docs_examples_run() -> None:
    """Every ```python block of docs/operators.md, in order, in one namespace."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.M | re.S)
    families = {m.group(1) for m in re.finditer(r"^### (\w+)", doc.read_text(), re.M)}
    assert len(blocks) >= 7 and families == {
        "dreamer",
        "diamond",
        "iris",
        "genie",
        "jepa",
        "random",
    }
    namespace: dict[str, object] = {"__name__": "operators_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/operators.md (block {i})", "exec"), namespace)
