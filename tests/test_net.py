"""Tests of the networks (``scripts.tokens`` up to ``scripts.presets``) and of loading their encoder weights, at the
``tiny`` preset (9 planes x 10 frames x 32 x 32, patch 5 x 8 x 8)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from scripts.encoder import CineEncoder
from scripts.heart_net import CineHeartNet
from scripts.labels import NUM_CLASSES, PHENOTYPE_NAMES
from scripts.mae import CineMAE, mae_loss
from scripts.measures import MEASURE_FEATURE_NAMES
from scripts.precision import autocast_context
from scripts.presets import PRESETS, CineGrid, build_network, preset_grid
from scripts.refiner import PlaneRefiner
from scripts.segmenter import temporal_upsampling_factors
from scripts.tokens import patchify, random_masking, unpatchify
from scripts.weights import load_encoder_weights, load_network_weights, shipped_precision

PLANES, FRAMES, SIZE = 9, 10, 32
PATCH = (5, 8, 8)
GRID = (FRAMES // 5, SIZE // 8, SIZE // 8)
TOKENS = PLANES * math.prod(GRID)


def make_image(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, PLANES, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def build(kind: str) -> CineMAE | CineHeartNet:
    torch.manual_seed(0)
    return build_network(kind, "tiny", num_planes=PLANES, num_frames=FRAMES, image_size=SIZE).eval()


@pytest.fixture(scope="module")
def heart() -> CineHeartNet:
    return build("heart")


@pytest.fixture(scope="module")
def mae() -> CineMAE:
    return build("mae")


def test_patchify_round_trip():
    image = make_image(2)
    patches = patchify(image, PATCH)
    assert patches.shape == (2, TOKENS, math.prod(PATCH))
    # token 1 is plane 0, t-block 0, y-block 0, x-block 1
    assert torch.equal(patches[0, 1].reshape(PATCH), image[0, 0, 0, :5, :8, 8:16])
    assert torch.equal(unpatchify(patches, PLANES, GRID, PATCH), image)


def test_random_masking_keeps_share_of_present_tokens_only():
    present = torch.ones(2, 100, dtype=torch.bool)
    present[1, 60:] = False
    ids, valid, mask = random_masking(present, 0.7)
    assert ids.shape == valid.shape == (2, 30)
    assert valid.sum(1).tolist() == [30, 18]
    assert mask.sum(1).tolist() == [70, 42]
    assert not bool(mask[1, 60:].any()), "absent tokens are never masked"
    assert bool((ids[1][valid[1]] < 60).all()), "absent tokens are never kept"
    ids, valid, mask = random_masking(present, 0.0)
    assert torch.equal(ids[1, :60], torch.arange(60)) and valid.sum(1).tolist() == [100, 60]
    assert not bool(mask.any())


def test_output_shapes(heart, mae):
    image = make_image(2)
    plane_mask = torch.ones(2, PLANES, dtype=torch.bool)
    with torch.no_grad():
        assert heart(image).shape == (2, NUM_CLASSES, PLANES, FRAMES, SIZE, SIZE)
        logits, representation = heart.segment_and_embed(image, plane_mask)
        assert logits.shape == (2, NUM_CLASSES, PLANES, FRAMES, SIZE, SIZE)
        assert representation.shape == heart.embed(image).shape == (2, 32)
        assert heart.predict_phenotypes(image).shape == (2, len(PHENOTYPE_NAMES))
        encoded = heart.encoder(image, return_layers=(2, 1))
        assert encoded.tokens.shape == (2, TOKENS, 32)
        assert [h.shape for h in encoded.hidden_states] == [(2, TOKENS, 32)] * 2
        out = mae(image)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    assert out["pred"].shape == (2, TOKENS, math.prod(PATCH))
    assert out["mask"].shape == (2, TOKENS)
    assert out["mask"].sum(1).tolist() == [TOKENS - int(TOKENS * 0.3)] * 2
    assert isinstance(mae.encoder, CineEncoder) and isinstance(heart.encoder, CineEncoder)


def test_mae_loss_only_on_masked_patches(mae):
    image = make_image(1)
    torch.manual_seed(1)
    with torch.no_grad():
        out = mae(image)
    target = patchify(image, PATCH)
    assert torch.allclose(out["loss"], mae_loss(out["pred"], target, out["mask"]))
    visible = int(torch.nonzero(out["mask"][0] == 0)[0])
    masked = int(torch.nonzero(out["mask"][0] == 1)[0])
    for norm_pix_loss in (False, True):
        loss = mae_loss(out["pred"], target, out["mask"], norm_pix_loss)
        changed_visible = target.clone()
        changed_visible[0, visible] = torch.rand(target.shape[-1])
        assert torch.equal(mae_loss(out["pred"], changed_visible, out["mask"], norm_pix_loss), loss)
        changed_masked = target.clone()
        changed_masked[0, masked] = torch.rand(target.shape[-1])
        assert not torch.equal(mae_loss(out["pred"], changed_masked, out["mask"], norm_pix_loss), loss)


def test_removed_plane_does_not_matter(heart, mae):
    image = make_image(1)
    plane_mask = torch.ones(1, PLANES, dtype=torch.bool)
    plane_mask[0, 4] = False
    other = image.clone()
    other[:, :, 4] = torch.rand_like(other[:, :, 4])
    zero_filled = image.clone()
    zero_filled[:, :, 4] = 0
    with torch.no_grad():
        reference = heart.embed(image, plane_mask)
        assert torch.allclose(heart.embed(other, plane_mask), reference, atol=1e-6)
        assert torch.allclose(heart.embed(zero_filled), reference, atol=1e-6), "derived plane mask"
        assert not torch.allclose(heart.embed(image), reference, atol=1e-4)
        keep = plane_mask[0]
        seg = heart(image, plane_mask)[:, :, keep]
        assert torch.allclose(heart(other, plane_mask)[:, :, keep], seg, atol=1e-5)
        torch.manual_seed(3)
        recon = mae(image, plane_mask)
        torch.manual_seed(3)
        assert torch.allclose(mae(other, plane_mask)["pred"], recon["pred"], atol=1e-6)
    plane_tokens = recon["mask"].reshape(PLANES, -1)
    assert not bool(plane_tokens[4].any()) and bool(plane_tokens[3].any())


def test_batch_with_different_plane_masks_equals_per_sample(heart):
    image = make_image(2)
    plane_mask = torch.ones(2, PLANES, dtype=torch.bool)
    plane_mask[0, [1, 7]] = False
    plane_mask[1, 2:6] = False
    with torch.no_grad():
        logits, representation = heart.segment_and_embed(image, plane_mask)
        for i in range(2):
            single_logits, single_representation = heart.segment_and_embed(image[i : i + 1], plane_mask[i : i + 1])
            assert torch.allclose(representation[i], single_representation[0], atol=1e-5)
            keep = plane_mask[i]
            assert torch.allclose(logits[i][:, keep], single_logits[0][:, keep], atol=1e-5)


def test_encoder_weights_transfer(mae, tmp_path):
    for checkpoint in (mae.state_dict(), {"network": mae.state_dict()}, {"model": build("heart").state_dict()}):
        heart = build_network("heart", "tiny", num_planes=PLANES, num_frames=FRAMES, image_size=SIZE)
        info = load_encoder_weights(heart, checkpoint)
        assert info["loaded"] == len(heart.encoder.state_dict()) and not info["missing_keys"]
    assert all(torch.equal(v, mae.state_dict()[f"encoder.{k}"]) for k, v in heart.encoder.state_dict().items())
    path = tmp_path / "mae.pt"
    torch.save({"network": mae.state_dict()}, path)
    assert load_encoder_weights(heart, path)["loaded"] > 0
    with pytest.raises(ValueError, match="no encoder weights"):
        load_encoder_weights(heart, {"decoder.weight": torch.zeros(1)})


def test_network_weights_load_from_any_wrapper_and_name_another_size_in_one_line(tmp_path):
    """A whole network loads from a plain state dict, a training checkpoint and one saved inside a DDP wrapper; weights
    of another size fail with one line naming the file, a tensor's two shapes and --preset."""
    state = build("heart").state_dict()
    ddp = {"network": {f"module.{key}": value for key, value in state.items()}}
    for name, checkpoint in (("plain", state), ("wrapped", {"network": state}), ("ddp", ddp)):
        torch.save(checkpoint, tmp_path / f"{name}.pt")
        torch.manual_seed(1)
        network = build_network("heart", "tiny", num_planes=PLANES)
        assert load_network_weights(network, tmp_path / f"{name}.pt") is network
        assert all(torch.equal(value, state[key]) for key, value in network.state_dict().items()), name
    wider = build_network("heart", "tiny", num_planes=PLANES, hidden_size=64)
    with pytest.raises(RuntimeError, match=r"plain.pt holds a network of another size .* check --preset") as error:
        load_network_weights(wider, tmp_path / "plain.pt")
    assert "e.g. encoder.plane_embed: (9, 32) in the file, (9, 64) here" in str(error.value) and "\n" not in str(
        error.value
    )
    with pytest.raises(FileNotFoundError, match="pass --ckpt"):
        load_network_weights(wider, tmp_path / "missing.pt")


def test_shipped_precision_rounds_all_but_the_heads_to_float16(tmp_path):
    state = build("heart").state_dict()
    torch.save({"network": state}, tmp_path / "trained.pt")
    shipped = torch.load(shipped_precision(tmp_path / "trained.pt", tmp_path / "shipped.pt"), weights_only=True)
    assert shipped.keys() == state.keys()
    for key, value in shipped.items():
        in_a_head = key.startswith(("phenotype_head.", "measure_head."))
        expected = torch.float16 if state[key].is_floating_point() and not in_a_head else state[key].dtype
        assert value.dtype == expected, key
        assert torch.equal(value, state[key].to(expected)), key


def test_presets_own_their_data_grid():
    assert preset_grid("tiny") == CineGrid(num_frames=10, crop_size=32, spacing_mm=7.2)
    assert preset_grid("small") == preset_grid("paper") == CineGrid(num_frames=50, crop_size=128, spacing_mm=1.8)
    # every grid covers the same field of view (mm)
    assert {round(preset_grid(name).crop_size * preset_grid(name).spacing_mm, 6) for name in PRESETS} == {230.4}
    # the network's nominal size defaults to the preset's grid: (10, 32, 32) is no multiple of 25 x 16 x 16
    assert build_network("heart", "tiny").encoder.token_grid((10, 32, 32)) == GRID
    with pytest.raises(ValueError, match="divisible by the patch size"):
        build_network("heart", "small", num_frames=10, image_size=32)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_grid("huge")
    with pytest.raises(ValueError, match=r"unknown network options \['grid'\]"):
        build_network("heart", "tiny", grid=preset_grid("small"))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 1, PLANES, 12, SIZE, SIZE), "divisible by the patch size"),
        ((1, 1, PLANES, FRAMES, 30, SIZE), "divisible by the patch size"),
        ((1, 1, 5, FRAMES, SIZE, SIZE), "canonical planes"),
        ((1, PLANES, FRAMES, SIZE, SIZE), "image must have shape"),
    ],
)
def test_invalid_input_shapes(heart, shape, match):
    with pytest.raises(ValueError, match=match):
        heart(torch.rand(shape))


def test_invalid_arguments(heart):
    with pytest.raises(ValueError, match="at least one present plane"):
        heart(make_image(1), torch.zeros(1, PLANES, dtype=torch.bool))
    with pytest.raises(ValueError, match="plane_mask must have shape"):
        heart(make_image(1), torch.ones(2, PLANES, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by the patch size"):
        build_network("heart", "tiny", num_frames=12, image_size=SIZE)
    with pytest.raises(ValueError, match="unknown preset"):
        build_network("heart", "huge")
    with pytest.raises(ValueError, match="unknown network options"):
        build_network("heart", "tiny", depth=3)
    with pytest.raises(ValueError, match="power of two"):
        build_network("heart", "tiny", patch_size=(5, 6, 6), num_frames=FRAMES, image_size=36)
    with pytest.raises(ValueError, match="one width per stage"):
        build_network("heart", "tiny", seg_channels=(4, 8), num_frames=FRAMES, image_size=SIZE)


def test_bf16_autocast_runs(heart, mae):
    image = make_image(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = heart(image)
        loss = mae(image)["loss"]
    assert logits.shape == (1, NUM_CLASSES, PLANES, FRAMES, SIZE, SIZE) and torch.isfinite(logits).all()
    assert torch.isfinite(loss)
    with torch.no_grad():
        reference = heart(image)
    assert (logits.float() - reference).abs().mean() < 0.05 * reference.abs().mean() + 1e-3
    with autocast_context("cpu"):
        assert torch.isfinite(heart.embed(image)).all()


def test_backward_reaches_all_parameters():
    heart = build("heart").train()
    logits, representation = heart.segment_and_embed(make_image(1))
    (logits.mean() + heart.phenotype_head(representation).mean()).backward()
    assert all(p.grad is not None for p in heart.parameters() if p.requires_grad)
    # the measure head is fit in closed form (head_fitting.fit_measure_head), never by gradient
    trainable = {name for name, p in heart.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in heart.named_parameters() if not name.startswith("measure_head.")}


def test_trace_keeps_plane_dropping(heart):
    image = make_image(1)
    with torch.no_grad():
        traced = torch.jit.trace(heart, image, check_trace=False)
        missing = image.clone()
        missing[:, :, [0, 8]] = 0
        keep = missing.flatten(3).abs().amax(-1)[0, 0] > 0
        assert torch.allclose(traced(image), heart(image), atol=1e-5)
        assert torch.allclose(traced(missing)[:, :, keep], heart(missing)[:, :, keep], atol=1e-5)


def test_phenotype_head_physical_units(heart):
    head = build("heart").phenotype_head
    mean, std = torch.arange(len(PHENOTYPE_NAMES)).float(), torch.full((len(PHENOTYPE_NAMES),), 2.0)
    head.set_target_stats(mean, std)
    representation = torch.rand(3, 32)
    assert torch.allclose(head.predict_physical(representation), head(representation) * 2.0 + mean)
    with pytest.raises(ValueError, match="must be > 0"):
        head.set_target_stats(mean, torch.zeros(len(PHENOTYPE_NAMES)))


def test_phenotype_head_standardises_its_input():
    head = build("heart").phenotype_head
    features = torch.randn(5, 32) * 3.0 + 10.0
    head.set_feature_stats(features.mean(0), features.std(0))
    expected = head.mlp((features - features.mean(0)) / features.std(0))
    assert torch.allclose(head(features), expected, atol=1e-5)
    with pytest.raises(ValueError, match="feature mean and std need 32"):
        head.set_feature_stats(torch.zeros(3), torch.ones(3))


def test_measure_head_reads_an_unmeasured_value_as_the_training_mean():
    head = build("heart").measure_head
    width = len(MEASURE_FEATURE_NAMES)
    assert not bool(head.fitted), "a new network's measure head is unfit (inference then reports the embedding head)"
    torch.manual_seed(0)
    head.set_linear(torch.randn(len(PHENOTYPE_NAMES), width), torch.randn(len(PHENOTYPE_NAMES)))
    assert bool(head.fitted)
    mean, std = torch.rand(width) * 100, torch.rand(width) + 1
    head.set_feature_stats(mean, std)
    measures = mean + torch.randn(2, width) * std
    unmeasured = measures.clone()
    unmeasured[:, :5] = float("nan")  # e.g. no SA stack: the ventricular measures are NaN
    imputed = measures.clone()
    imputed[:, :5] = mean[:5]
    assert torch.isfinite(head(unmeasured)).all()
    assert torch.allclose(head(unmeasured), head(imputed), atol=1e-5)
    assert not torch.allclose(head(unmeasured), head(measures), atol=1e-3)


def test_temporal_upsampling_factors():
    assert temporal_upsampling_factors(25, 4) == [5, 5, 1, 1]
    assert temporal_upsampling_factors(8, 3) == [2, 2, 2]
    assert temporal_upsampling_factors(16, 3) == [4, 2, 2]
    assert temporal_upsampling_factors(1, 2) == [1, 1]


def test_decode_frames_differs_from_the_full_pass_only_by_the_last_norm(heart):
    """The full-resolution stage works frame by frame: decoding a few frames gives those frames' logits of the full
    pass, except that stage 0's instance norm takes its statistics over the decoded frames."""
    image, plane_mask = make_image(1), torch.ones(1, PLANES, dtype=torch.bool)
    planes, frames = torch.tensor([1, 6]), torch.tensor([0, 3, 4, 9])
    with torch.no_grad():
        full = heart(image, plane_mask, planes)
        subset = heart(image, plane_mask, planes, frames)
        assert subset.shape == (1, NUM_CLASSES, 2, 4, SIZE, SIZE)
        assert torch.equal(heart(image, plane_mask, planes, torch.arange(FRAMES)), full)
        assert not torch.allclose(subset, full[:, :, :, frames], atol=1e-4)  # the norm's statistics differ
        without_norm = copy.deepcopy(heart)
        without_norm.segmenter.stages[-1][1] = torch.nn.Identity()
        torch.testing.assert_close(
            without_norm(image, plane_mask, planes, frames), without_norm(image, plane_mask, planes)[:, :, :, frames]
        )
    # a decoder that still upsamples time at full resolution cannot decode a subset of frames
    coarse_time = build_network(
        "heart", "tiny", num_frames=FRAMES, image_size=SIZE, patch_size=(5, 2, 2), seg_channels=(4, 8), image_levels=1
    )
    with pytest.raises(ValueError, match="decode_frames needs a full-resolution stage without temporal upsampling"):
        coarse_time(image, plane_mask, None, frames)


def test_image_levels_feed_the_coarser_decoder_stages():
    torch.manual_seed(0)
    heart = build_network("heart", "tiny", num_planes=PLANES, num_frames=FRAMES, image_size=SIZE, image_levels=3)
    baseline = build_network("heart", "tiny", num_planes=PLANES, num_frames=FRAMES, image_size=SIZE, image_levels=1)
    baseline_keys = set(baseline.state_dict())
    # 1 (the network before the option) adds no weights, so checkpoints trained before it load with it
    assert not any("coarse_image_branches" in key for key in baseline_keys)
    assert set(heart.state_dict()) - baseline_keys == {
        f"segmenter.coarse_image_branches.{i}.{p}" for i in range(2) for p in ("weight", "bias")
    }
    image = make_image(1).requires_grad_(True)
    logits, representation = heart.segment_and_embed(image)
    assert logits.shape == (1, NUM_CLASSES, PLANES, FRAMES, SIZE, SIZE)
    (logits.mean() + heart.phenotype_head(representation).mean()).backward()
    for branch in heart.segmenter.coarse_image_branches:
        assert branch.weight.grad is not None and branch.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"image_levels must lie in \[1, 4\]"):
        build_network("heart", "tiny", num_frames=FRAMES, image_size=SIZE, image_levels=5)


def with_refiner() -> CineHeartNet:
    torch.manual_seed(0)
    return build_network("heart", "tiny", PLANES, FRAMES, SIZE, refiner_channels=(4, 8)).eval()


def test_an_untrained_refiner_keeps_the_decoders_segmentation_and_weights_without_one_load(tmp_path):
    """The refiner's correction starts at zero, so the network with it segments as its decoder does, and weights saved
    before the refiner existed load into a network that has one (as the synthetic-only weights do)."""
    heart = with_refiner()
    assert build("heart").refiner is None, "no preset has a refiner: inference.yaml adds the shipped weights' one"
    image = make_image(1)
    with torch.no_grad():
        refined, coarse = heart(image), heart(image, refine=False)
    assert refined.shape == coarse.shape == (1, NUM_CLASSES, PLANES, FRAMES, SIZE, SIZE)
    assert torch.allclose(refined.softmax(1), coarse.softmax(1), atol=1e-4)
    without = {key: value for key, value in heart.state_dict().items() if not key.startswith("refiner.")}
    torch.save(without, tmp_path / "without_refiner.pt")
    loaded = load_network_weights(with_refiner(), tmp_path / "without_refiner.pt")
    with torch.no_grad():
        assert torch.equal(loaded(image).argmax(1), coarse.argmax(1))
    # the other way round, a network without a refiner segments with the decoder alone; one with another refiner
    # is told which options to pass
    torch.save(heart.state_dict(), tmp_path / "with_refiner.pt")
    decoder_only = load_network_weights(build("heart"), tmp_path / "with_refiner.pt")
    with torch.no_grad():
        assert torch.allclose(decoder_only(image), coarse, atol=1e-5)
    reading_more_frames = build_network(
        "heart", "tiny", PLANES, FRAMES, SIZE, refiner_channels=(4, 8), refiner_frame_offsets=(-3, 3)
    )
    with pytest.raises(RuntimeError, match="refiner of other widths or image frames"):
        load_network_weights(reading_more_frames, tmp_path / "with_refiner.pt")


def test_the_refiner_works_on_each_plane_frame_alone_and_learns_a_correction():
    """Refining the decoded planes and frames equals refining everything and taking them, and a non-zero correction
    changes the segmentation; a refiner given uninformative probabilities learns a target from the image alone."""
    heart = with_refiner()
    torch.nn.init.normal_(heart.refiner.correction.weight, std=0.5)
    image = make_image(1)
    planes, frames = torch.tensor([1, 4]), torch.tensor([0, 3, 7])
    with torch.no_grad():
        coarse = heart(image, refine=False)
        everything = heart.refine(image, coarse)
        some = heart.refine(image, coarse[:, :, planes][:, :, :, frames], planes, frames)
    assert torch.allclose(some, everything[:, :, planes][:, :, :, frames], atol=1e-4)
    assert not torch.allclose(everything.softmax(1), coarse.softmax(1), atol=1e-2)

    refiner = PlaneRefiner((4, 8))
    probabilities = torch.full((2, NUM_CLASSES, 16, 16), 1 / NUM_CLASSES)
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    optimiser = torch.optim.Adam(refiner.parameters(), lr=1e-2)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(refiner(torch.rand(2, 1, 16, 16), probabilities), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss < math.log(NUM_CLASSES) - 0.5, "the correction moved the logits towards the target"


def test_a_refiner_with_frame_offsets_reads_those_frames_of_the_cycle():
    """With frame offsets (-2, 1) the refined frame t also sees frames t - 2 and t + 1 of its plane, cyclically: a
    change at frame 5 alters the refined frames 7 and 4 (and 5), no other frame, and no frame without offsets."""
    torch.manual_seed(0)
    heart = build_network("heart", "tiny", PLANES, FRAMES, SIZE, refiner_channels=(4, 8), refiner_frame_offsets=(-2, 1))
    torch.nn.init.normal_(heart.refiner.correction.weight, std=0.5)
    heart.eval()
    image = make_image(1)
    changed = image.clone()
    changed[:, :, 2, 5] = torch.rand_like(changed[:, :, 2, 5])
    with torch.no_grad():
        coarse = heart(image, refine=False)
        refined, refined_changed = heart.refine(image, coarse), heart.refine(changed, coarse)
        planes, frames = torch.tensor([2]), torch.tensor([FRAMES - 1, 3])
        some = heart.refine(image, coarse[:, :, planes][:, :, :, frames], planes, frames)
    moved = (refined - refined_changed).abs().amax((0, 1, 4, 5)) > 1e-5  # (P, T)
    assert torch.nonzero(moved).tolist() == [[2, 4], [2, 5], [2, 7]]
    assert torch.allclose(some, refined[:, :, planes][:, :, :, frames], atol=1e-4)
    with pytest.raises(ValueError, match="reads 3 image frames"):
        heart.refiner(image[:, :, 0, :1], coarse[:, :, 0, 0])


def test_the_refiners_inference_path_computes_its_training_function():
    """Without a gradient the refiner runs its upper levels channels-last, with group norm and strided-view pooling
    (faster on CPU); with one, NCHW instance norm and max pooling. Both give the same logits, in NCHW order."""
    torch.manual_seed(0)
    refiner = PlaneRefiner((4, 8, 16, 32), frame_offsets=(-3, 3))
    for module in refiner.modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    torch.nn.init.normal_(refiner.correction.weight, std=0.5)
    image, probabilities = torch.rand(3, 3, 32, 32), torch.rand(3, NUM_CLASSES, 32, 32).softmax(1)
    training_path = refiner(image, probabilities).detach()
    with torch.no_grad():
        inference_path = refiner(image, probabilities)
    assert inference_path.is_contiguous()
    assert torch.allclose(inference_path, training_path, atol=1e-4)
    assert not torch.allclose(training_path, probabilities.log(), atol=1e-2), "the correction is not trivial"


def test_the_decoders_inference_path_computes_its_training_function_channels_last():
    """Without a gradient the decoder's instance norms run as group norms that keep the channels-last layout of its
    convolutions; with one, instance norm. Both give the same logits; the refiner's chunking changes nothing."""
    torch.manual_seed(0)
    heart = build_network(
        "heart", "tiny", num_planes=PLANES, num_frames=FRAMES, image_size=SIZE, refiner_channels=(4, 8)
    ).eval()
    for module in heart.segmenter.modules():
        if isinstance(module, torch.nn.InstanceNorm3d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    image, plane_mask = make_image(1), torch.ones(1, PLANES, dtype=torch.bool)
    training_path = heart(image, plane_mask).detach()
    layouts = []
    norm = heart.segmenter.stages[-1][1]
    norm.register_forward_hook(
        lambda module, inputs, output: layouts.append(output.is_contiguous(memory_format=torch.channels_last_3d))
    )
    with torch.no_grad():
        inference_path = heart(image, plane_mask)
        heart.refiner_chunk = 7  # the plane-frames refined in chunks that do not divide them
        chunked = heart(image, plane_mask)
    assert layouts[-2:] == [True, True], "the full-resolution norm keeps channels-last without a gradient"
    torch.testing.assert_close(inference_path, training_path, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked, inference_path)


def test_refiner_arguments_and_sizes_are_checked():
    with pytest.raises(ValueError, match="one or more positive widths"):
        PlaneRefiner(())
    with pytest.raises(ValueError, match="multiples of 4"):
        PlaneRefiner((4, 8, 16))(torch.rand(1, 1, 30, 32), torch.rand(1, NUM_CLASSES, 30, 32))
    assert build_network("heart", "tiny", num_frames=FRAMES, image_size=SIZE, refiner_channels=()).refiner is None
