"""Tiling covers every pixel, stitches a known map back exactly, blends without seams, ignores padding;
preprocessing follows the model metadata."""

from __future__ import annotations

import time

import numpy as np
import pytest

from contract.metadata import ModelMetadata
from contract.preprocess import PreprocessError, to_model_input
from contract.tiling import TilingError, blend_window, extract_tiles, resize_to_gsd, stitch, tile_grid

# (height, width): smaller than a tile, exactly a tile, non-multiples, one side small, full HD.
SIZES = [(1, 1), (100, 300), (512, 512), (513, 1000), (300, 1400), (1080, 1920)]


@pytest.mark.parametrize("overlap", [0, 64])
@pytest.mark.parametrize("height,width", SIZES)
def test_grid_covers_every_pixel_and_stitches_a_known_map_back_exactly(height, width, overlap):
    grid = tile_grid(height, width, tile=512, overlap=overlap)
    coverage = np.zeros((height, width), dtype=np.int32)
    for i, (y, x) in enumerate(grid.origins):
        h, w = grid.valid_size(i)
        assert y >= 0 and x >= 0
        # a tile lies inside the frame unless the frame is smaller than a tile on that axis
        assert h == min(512, height) and w == min(512, width)
        coverage[y : y + h, x : x + w] += 1
    assert coverage.min() >= 1, "some pixel is not covered by any tile"
    # neighbouring tiles overlap by at least `overlap`; the last one is flush with the border
    ys = sorted({y for y, _ in grid.origins})
    xs = sorted({x for _, x in grid.origins})
    for starts, length in ((ys, height), (xs, width)):
        assert starts[-1] + 512 == length or (len(starts) == 1 and length <= 512)
        assert all(b - a <= 512 - overlap for a, b in zip(starts[:-1], starts[1:], strict=True))

    rng = np.random.default_rng(height * 7 + width)
    known = rng.random((height, width), dtype=np.float32)
    tiles = extract_tiles(known, grid)
    assert tiles.shape == (len(grid), 512, 512)
    assert np.array_equal(stitch(tiles, grid), known)
    assert np.array_equal(stitch(tiles[:, None], grid), known)  # N x 1 x H x W as a backend returns


def test_small_tiles_on_many_sizes_stitch_exactly():
    rng = np.random.default_rng(0)
    for height, width in [(17, 33), (64, 64), (65, 200), (129, 47)]:
        for overlap in (0, 8, 31):
            grid = tile_grid(height, width, tile=32, overlap=overlap)
            known = rng.random((height, width)).astype(np.float32)
            assert np.array_equal(stitch(extract_tiles(known, grid), grid), known), (height, width, overlap)


def test_fill_of_a_small_frame_is_mirrored_and_never_counts():
    frame = np.full((100, 300, 3), 200, dtype=np.uint8)
    frame[:, 290:] = 30  # a dark band at the right edge
    grid = tile_grid(100, 300, tile=512, overlap=64)
    assert len(grid) == 1
    tiles = extract_tiles(frame, grid)
    assert tiles.shape == (1, 512, 512, 3) and tiles.dtype == np.uint8
    assert np.array_equal(tiles[0, :100, :300], frame)
    # mirrored, not black: no image-to-black step for the network to read as a crack
    assert np.array_equal(tiles[0, 100:200, :300], frame[::-1])
    assert np.array_equal(tiles[0, :100, 300:310], frame[:, ::-1][:, :10])
    assert (tiles[0] != 0).all()
    # a model that "detects" cracks in the fill must not create any in the frame
    probs = np.ones((1, 512, 512), dtype=np.float32)
    probs[0, :100, :300] = 0.1
    assert np.array_equal(stitch(probs, grid), np.full((100, 300), 0.1, dtype=np.float32))


def test_tiny_frames_are_filled_too():
    frame = np.arange(6, dtype=np.uint8).reshape(1, 6)
    grid = tile_grid(1, 6, tile=16, overlap=0)
    tile = extract_tiles(frame, grid)[0]
    assert (tile == np.tile(np.concatenate([frame[0], frame[0, ::-1]]), 2)[:16]).all()


def test_blending_leaves_no_seam_between_disagreeing_tiles():
    """Two tiles that disagree (0 vs 1) meet in a ramp of overlap px, not a step."""
    grid = tile_grid(512, 512 + 448, tile=512, overlap=64)
    assert [x for _, x in grid.origins] == [0, 448]
    probs = np.stack([np.zeros((512, 512)), np.ones((512, 512))]).astype(np.float32)
    out = stitch(probs, grid)
    row = out[256]
    assert row[:448].max() == 0.0 and row[512:].min() == 1.0
    steps = np.diff(row)
    assert steps.min() >= 0.0
    assert steps.max() <= 1.0 / 64 + 1e-6, f"largest jump {steps.max():.4f} is a seam"


def test_blend_window_is_a_partition_of_unity_over_the_overlap():
    w = blend_window(512, 64)
    assert w.min() > 0 and w[64:448].min() == 1.0
    np.testing.assert_allclose(w[448:] + w[:64], 1.0)
    assert (blend_window(16, 0) == 1).all()


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(height=100, width=100, tile=64, overlap=64), "overlap (64 px) must be smaller than the tile"),
        (dict(height=100, width=100, tile=64, overlap=-1), "overlap must be >= 0"),
        (dict(height=0, width=100), "height must be >= 1"),
        (dict(height=100, width=10.5), "width must be an integer"),
    ],
)
def test_bad_grid_arguments_name_the_argument(kwargs, words):
    with pytest.raises(TilingError, match=words.replace("(", r"\(").replace(")", r"\)")):
        tile_grid(**kwargs)


def test_shape_mismatches_say_what_was_expected():
    grid = tile_grid(100, 200, tile=64, overlap=16)
    with pytest.raises(TilingError, match="grid was made for 100 x 200"):
        extract_tiles(np.zeros((200, 100, 3), np.uint8), grid)
    with pytest.raises(TilingError, match=f"stitch expects {len(grid)} x 64 x 64"):
        stitch(np.zeros((len(grid) - 1, 64, 64), np.float32), grid)


def test_resize_to_gsd_scales_the_frame_and_reports_the_effective_gsd():
    frame = np.zeros((600, 1000, 3), np.uint8)
    small, gsd = resize_to_gsd(frame, 0.5, 1.0)
    assert small.shape == (300, 500, 3) and gsd == pytest.approx(1.0)
    big, gsd = resize_to_gsd(frame, 1.0, 0.75)
    assert big.shape == (800, 1333, 3) and gsd == pytest.approx(1000 / 1333)
    same, gsd = resize_to_gsd(frame, 0.8, 0.8)
    assert same is frame and gsd == 0.8
    with pytest.raises(TilingError, match="target_gsd_mm_per_px must be a positive"):
        resize_to_gsd(frame, 0.5, 0.0)


def test_to_model_input_follows_the_metadata():
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, size=(2, 32, 48, 3), dtype=np.uint8)
    rgb = to_model_input(tiles, ModelMetadata())
    assert rgb.shape == (2, 3, 32, 48) and rgb.dtype == np.float32 and rgb.flags.c_contiguous
    # channel 0 of an RGB model is the red channel, OpenCV's channel 2
    np.testing.assert_allclose(rgb[:, 0], tiles[..., 2] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(rgb[:, 2], tiles[..., 0] / 255.0, rtol=1e-6)
    meta = ModelMetadata(color_order="BGR", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    bgr = to_model_input(tiles, meta)
    expected = (tiles / 255.0 - np.array(meta.mean)) / np.array(meta.std)
    np.testing.assert_allclose(bgr, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert to_model_input(tiles[0], ModelMetadata()).shape == (1, 3, 32, 48)


def test_to_model_input_rejects_wrong_shapes():
    with pytest.raises(PreprocessError, match=r"N x H x W x 3.*got shape \(2, 3, 32, 32\)"):
        to_model_input(np.zeros((2, 3, 32, 32), np.uint8), ModelMetadata())
    with pytest.raises(PreprocessError, match="dtype int64"):
        to_model_input(np.zeros((1, 8, 8, 3), np.int64), ModelMetadata())


def test_to_model_input_is_fast_on_a_batch_of_eight_512_tiles():
    tiles = np.random.default_rng(2).integers(0, 256, size=(8, 512, 512, 3), dtype=np.uint8)
    meta = ModelMetadata()
    to_model_input(tiles, meta)  # warm the allocator
    best = min(_timed(lambda: to_model_input(tiles, meta)) for _ in range(5))
    print(f"to_model_input 8x512x512x3: {best * 1e3:.1f} ms (best of 5)")
    assert best < 0.2  # generous on a shared 2-core CI machine; typically ~5 ms


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
