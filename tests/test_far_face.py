"""Far faces (issue 14): the default face pathway finds faces 40 px wide at 640x480 (about 2 m),
keeps large faces, reports no face in face-free frames, and follows a small face over time."""

from __future__ import annotations

import numpy as np
import pytest

from device.config import Config, config_from_dict
from device.inference.blazeface import Detection
from device.inference.face import FaceAnalyzer, merge_duplicates, tile_regions, window_around
from device.observation import Frame
from tests import far_faces


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer.from_config(Config())


def fresh_boxes(analyzer: FaceAnalyzer, image: np.ndarray) -> list[tuple[float, float, float, float]]:
    """What the pathway reports for a face that has just appeared and holds still for the few
    detection rounds a full search takes (tiles are searched in turn)."""
    analyzer.tracker.reset()
    analyzer._known = None
    analyzer._tile_cursor = 0
    for _ in range(analyzer.search_rounds(image)):
        analyzer._since_detect = 0
        obs = analyzer.process(Frame(0.0, image))
        if obs.probs is not None:
            return [tuple(obs.features["box"])]
    return []


def recall(analyzer: FaceAnalyzer, width: int, sources) -> float:
    scenes = list(far_faces.face_scenes(width, sources))
    hits = [any(far_faces.is_hit(b, s.face_box) for b in fresh_boxes(analyzer, s.image)) for s in scenes]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("width", [32, 40, 48, 80, 150])
def test_astronaut_found_from_40_px(analyzer, width):
    # 15 scenes: five positions, bright / dim / dark; the old short-range default found none below 56 px
    # (32 px: 14 of 15 measured; the line is held at 13)
    assert recall(analyzer, width, far_faces.face_sources()[:1]) >= (0.95 if width >= 40 else 0.85)


def test_real_faces_of_lfw_at_40_px_do_not_regress(analyzer):
    # tight, blurred 25x25 grey crops without hair or outline: hard for every detector
    # (bench/bench_far_face.py); the line is held below the measured level, above the old default's 0
    assert recall(analyzer, 40, far_faces.face_sources()[1:21]) >= 0.2


def test_old_default_misses_what_the_new_one_finds():
    old = FaceAnalyzer.from_config(config_from_dict({"face": {"detector": "short_range", "search_tile_px": 0}}))
    assert recall(old, 40, far_faces.face_sources()[:1]) <= 0.2  # the benchmark's contrast is real


def test_face_free_frames_report_no_face(analyzer):
    scenes = list(far_faces.face_free_scenes(count=100))
    false = sum(bool(fresh_boxes(analyzer, s.image)) for s in scenes)
    assert false <= 1


def test_small_face_is_found_then_followed_with_the_window_search():
    analyzer = FaceAnalyzer.from_config(Config())  # detect_every 2: detector, tracker, detector, ...
    source = far_faces.face_sources()[:1]
    background = far_faces.backgrounds()[0]
    rng = np.random.default_rng(5)
    found, calls_after_first = 0, []
    for i in range(30):
        centre = (0.35 + 0.01 * i, 0.45)
        frame, truth = far_faces.paste_face(background, source[0][1], source[0][2], 40.0, centre)
        obs = analyzer.process(Frame(i / 10, far_faces.light(frame, 1.0, 2.0, rng)))
        found += obs.probs is not None and far_faces.is_hit(tuple(obs.features["box"]), truth)
        calls_after_first.append(analyzer.detector_calls)
    # a search takes up to six rounds on every 2nd frame (tiles in turn), then the face is held
    assert found >= 20
    # once found, each detection round costs one call (the window around the face)
    assert calls_after_first[-1] - calls_after_first[11] <= 10


def test_search_rounds_cover_every_tile_in_turn():
    analyzer = FaceAnalyzer.from_config(Config())
    image = np.zeros((480, 640, 3), np.uint8)
    assert analyzer.search_rounds(image) == 6  # 12 tiles of 256 px, 2 per round
    seen = [tile for _ in range(6) for tile in analyzer._tiles_this_round((0, 0, 640, 480))]
    assert sorted(seen) == sorted(tile_regions((0, 0, 640, 480), 256))
    calls = analyzer.detector_calls
    for i in range(4):  # nobody in view: a round (the frame + 2 tiles) on every 2nd frame only
        analyzer.process(Frame(i / 10, image))
    assert analyzer.detector_calls - calls == 6


def test_tiles_cover_the_region_with_half_overlap():
    tiles = tile_regions((0, 0, 640, 480), 320)
    assert len(tiles) == 6
    assert all(x1 - x0 == 320 and y1 - y0 == 320 for x0, y0, x1, y1 in tiles)
    covered = np.zeros((480, 640), bool)
    for x0, y0, x1, y1 in tiles:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    # a face up to half a tile wide lies wholly in some tile, wherever it is
    for fx, fy in [(150, 150), (300, 200), (479, 319), (0, 0)]:
        assert any(x0 <= fx and fx + 160 <= x1 and y0 <= fy and fy + 160 <= y1 for x0, y0, x1, y1 in tiles)
    assert tile_regions((0, 0, 300, 200), 320) == []
    assert tile_regions((0, 0, 640, 480), 0) == []


def _det(x0, y0, x1, y1, score=0.9) -> Detection:
    return Detection(x0, y0, x1, y1, score, np.zeros((6, 2), np.float32))


def test_window_around_a_face_stays_inside_the_region():
    x0, y0, x1, y1 = window_around(_det(600, 440, 640, 480), (0, 0, 640, 480))
    assert (x1 - x0, y1 - y0) == (160, 160) and x1 <= 640 and y1 <= 480
    big = window_around(_det(100, 100, 400, 400), (0, 0, 640, 480))
    assert big == (10, 0, 490, 480)  # 4 face widths, capped at the frame height, centred on the face


def test_duplicates_from_overlapping_tiles_are_merged():
    merged = merge_duplicates([_det(10, 10, 50, 50, 0.7), _det(12, 11, 51, 52, 0.9), _det(200, 10, 240, 50, 0.8)])
    assert [d.score for d in merged] == [0.9, 0.8]


def test_search_tile_config_is_validated():
    from device.errors import ConfigError

    with pytest.raises(ConfigError, match="search_tile_px"):
        config_from_dict({"face": {"search_tile_px": 50}})
    with pytest.raises(ConfigError, match="detector"):
        config_from_dict({"face": {"detector": "yunet"}})


def test_small_face_quality_follows_the_measured_accuracy_curve():
    from device.inference.face import size_quality

    assert size_quality(200) == 1.0 and size_quality(48) == 1.0
    assert size_quality(32) == pytest.approx(0.976) and size_quality(24) == pytest.approx(0.896)
    assert size_quality(12) < size_quality(24) < size_quality(32) <= size_quality(40) <= size_quality(48)
    assert size_quality(0) == 0.0
