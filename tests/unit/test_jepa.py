"""I-JEPA's parts at toy size: the mask collators, the config checks, the networks, the EMA and
its schedule, the stop-gradient of the target, and the loss falling on a fixed batch."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from wm_ray.models.common.optim import Optimizer
from wm_ray.models.jepa.config import JEPAConfig, MaskConfig, ViTConfig, check_config
from wm_ray.models.jepa.losses import (
    cosine,
    ema_update,
    jepa_loss,
    jepa_step,
    momentum,
    split_decay,
    target_features,
)
from wm_ray.models.jepa.masks import Masks, MultiBlockMaskCollator, RandomMaskCollator
from wm_ray.models.jepa.networks import build_networks, sincos_2d

TINY = JEPAConfig(
    patch=4,
    encoder=ViTConfig(32, 2, 2, 2),
    predictor=ViTConfig(16, 1, 2, 2),
    mask=MaskConfig(targets=2, min_keep=2),
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check(masks: Masks, n: int, batch: int, blocks: int, min_keep: int) -> None:
    context, targets = masks
    assert context.dtype == targets.dtype == torch.int64
    assert context.shape[0] == batch and targets.shape[:2] == (blocks, batch)
    assert context.shape[1] >= min_keep and targets.shape[2] >= 1
    assert int(context.min()) >= 0 and int(context.max()) < n and int(targets.max()) < n
    for b in range(batch):
        ctx = set(context[b].tolist())
        assert len(ctx) == context.shape[1]  # no repeated patch
        for m in range(blocks):
            assert not ctx & set(targets[m, b].tolist())  # the context never sees a target


@pytest.mark.parametrize("grid", [(8, 8), (14, 14), (4, 4)])
def test_multiblock_masks_have_their_shapes_and_the_context_excludes_every_target(
    grid: tuple[int, int],
) -> None:
    small = grid == (4, 4)
    min_keep, blocks = (2, 2) if small else (10, 4)
    collator = MultiBlockMaskCollator(grid, targets=blocks, min_keep=min_keep)
    n = grid[0] * grid[1]
    for step in range(20):
        masks = collator(8, _gen(step))
        _check(masks, n, 8, blocks, min_keep)
        # every target set is one rectangle: rows x cols of consecutive patches
        rows = masks.targets[0, 0] // grid[1]
        cols = masks.targets[0, 0] % grid[1]
        h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        assert h * w == masks.targets.shape[2]
    # the paper's scales on 14x14: each target ~15-20% (29-39 patches up to rounding), the
    # context most of what is left
    sizes = [collator(4, _gen(s)) for s in range(10)] if grid == (14, 14) else []
    for masks in sizes:
        assert 20 <= masks.targets.shape[2] <= 48
        assert masks.context.shape[1] >= 40


def test_min_keep_is_honoured_where_the_targets_crowd_the_context() -> None:
    # 5x5 grid, 4 large targets: most placements leave few context patches
    collator = MultiBlockMaskCollator((5, 5), target_scale=(0.2, 0.2), min_keep=6)
    for seed in range(30):
        masks = collator(6, _gen(seed))
        _check(masks, 25, 6, 4, 6)
    impossible = MultiBlockMaskCollator((4, 4), min_keep=15)  # targets take 2+ of 16 patches
    with pytest.raises(RuntimeError, match="fewer than min_keep=15"):
        impossible(2, _gen(0))


def test_random_masks_split_the_grid_and_honour_min_keep() -> None:
    collator = RandomMaskCollator((6, 6), ratio=(0.4, 0.6))
    masks = collator(5, _gen(0))
    _check(masks, 36, 5, 1, 4)
    for b in range(5):
        both = set(masks.context[b].tolist()) | set(masks.targets[0, b].tolist())
        assert both == set(range(36))
    capped = RandomMaskCollator((3, 3), ratio=(0.95, 0.95), min_keep=4)(2, _gen(0))
    assert capped.context.shape == (2, 4) and capped.targets.shape == (1, 2, 5)


@pytest.mark.parametrize(
    "collator", [MultiBlockMaskCollator((8, 8)), RandomMaskCollator((8, 8))], ids=["multi", "rand"]
)
def test_masks_are_reproducible_with_a_seed_and_differ_with_another(collator: object) -> None:
    a, b, c = (collator(6, _gen(s)) for s in (3, 3, 4))  # type: ignore[operator]
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert not (
        a.context.shape == c.context.shape
        and torch.equal(a.context, c.context)
        and a.targets.shape == c.targets.shape
        and torch.equal(a.targets, c.targets)
    )


def test_the_config_check_names_every_bad_value() -> None:
    bad = JEPAConfig(
        patch=5,
        encoder=ViTConfig(30, 2, 4),
        mask=MaskConfig(target_scale_min=0.3, target_scale_max=0.2, context_scale_min=0.0),
        ema_start=1.0,
        ema_end=0.99,
    )
    text = "; ".join(check_config(bad, image_size=16))
    for named in (
        "jepa.encoder.heads=4 (must divide jepa.encoder.width=30)",
        "jepa.encoder.width=30 (must be a multiple of 4",
        "jepa.mask.target_scale_min=0.3 (must be <= jepa.mask.target_scale_max=0.2)",
        "jepa.mask.context_scale_min=0.0 (must be in (0, 1])",
        "jepa.ema_start=1.0 (must be <= jepa.ema_end=0.99)",
        "jepa.patch=5 (must divide the frame side 16)",
    ):
        assert named in text
    assert check_config(JEPAConfig(), image_size=64) == []
    assert check_config(TINY, image_size=16) == []
    crowded = check_config(JEPAConfig(patch=8, mask=MaskConfig(min_keep=4)), image_size=16)
    assert any("jepa.mask.min_keep=4" in b for b in crowded)  # a 2x2 grid has no room


def test_positions_are_distinct_and_the_encoder_reads_any_subset_of_patches() -> None:
    pos = sincos_2d(32, 4, 4)
    assert pos.shape == (16, 32) and torch.cdist(pos, pos).add(torch.eye(16)).min() > 0.1
    encoder, predictor, _ = build_networks(TINY, (16, 16, 3))
    frames = torch.rand(2, 16, 16, 3) * 2 - 1
    full = encoder(frames)
    assert full.shape == (2, 16, 32)
    keep = torch.tensor([[0, 5, 9], [1, 2, 15]])
    part = encoder(frames, keep)
    assert part.shape == (2, 3, 32)
    out = predictor(part, keep, torch.tensor([[[3, 4]], [[6, 7]]]).permute(1, 0, 2))
    assert out.shape == (1, 2, 2, 32) and torch.isfinite(out).all()


def test_the_ema_momentum_rises_linearly_from_start_to_end_then_stays() -> None:
    values = [momentum(s, 100, 0.996, 1.0) for s in range(0, 131, 10)]
    assert values[0] == 0.996 and values[10] == pytest.approx(1.0) and values[-1] == 1.0
    assert all(b > a for a, b in itertools.pairwise(values[:11]))
    assert momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine(0, 10, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(10, 10, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine(5, 10, 0.04, 0.4) == pytest.approx(0.22)


def test_ema_update_moves_the_target_by_one_minus_the_momentum() -> None:
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = copy.deepcopy(target)
    ema_update(target, online, 0.9)
    for t, o, b in zip(target.parameters(), online.parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


def _step_parts(seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    encoder, predictor, target = build_networks(TINY, (16, 16, 3))
    params, exempt = split_decay([encoder, predictor])
    opt = Optimizer(params, 1e-3, clip=0.0, no_decay=exempt, weight_decay=0.04)
    return encoder, predictor, target, opt


def test_the_target_gets_no_gradient_and_changes_only_by_the_ema() -> None:
    encoder, predictor, target, opt = _step_parts()
    assert not any(p.requires_grad for p in target.parameters())
    frames = torch.rand(4, 16, 16, 3) * 2 - 1
    masks = MultiBlockMaskCollator((4, 4), targets=2, min_keep=2)(4, _gen(0))
    online_before = copy.deepcopy(encoder)
    target_before = copy.deepcopy(target)
    jepa_step(encoder, predictor, target, opt, frames, masks, 0.9, 0.04)
    assert all(p.grad is None for p in target.parameters())
    assert any(p.grad is not None for p in encoder.parameters())
    assert not all(
        torch.equal(a, b) for a, b in zip(encoder.parameters(), online_before.parameters())
    )
    for t, b, o in zip(target.parameters(), target_before.parameters(), encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)  # the EMA toward the updated encoder
    # at momentum 1 the target never moves, whatever the loss
    frozen = copy.deepcopy(target)
    jepa_step(encoder, predictor, target, opt, frames, masks, 1.0, 0.04)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), frozen.parameters()))
    assert opt.opt.param_groups[0]["weight_decay"] == 0.04
    assert opt.opt.param_groups[1]["weight_decay"] == 0.0  # biases, norms, the mask token


@pytest.mark.parametrize("kind", ["smooth_l1", "mse"])
def test_the_loss_falls_on_a_fixed_batch(kind: str) -> None:
    encoder, predictor, target, opt = _step_parts()
    gen = _gen(1)
    frames = torch.zeros(8, 16, 16, 3) - 1
    for i in range(8):  # a bright square at a different place in each frame
        r, c = (
            int(torch.randint(0, 12, (), generator=gen)),
            int(torch.randint(0, 12, (), generator=gen)),
        )
        frames[i, r : r + 4, c : c + 4] = 1.0
    masks = MultiBlockMaskCollator((4, 4), targets=2, min_keep=2)(8, _gen(2))
    targets = target_features(target, frames)
    first, _ = jepa_loss(encoder, predictor, targets, frames, masks, kind)
    for _ in range(40):
        metrics = jepa_step(encoder, predictor, target, opt, frames, masks, 1.0, 0.0, kind)
    last, _ = jepa_loss(encoder, predictor, targets, frames, masks, kind)
    assert float(last.detach()) < 0.5 * float(first.detach())
    assert float(metrics["train/jepa/target_std"]) > 0.1
