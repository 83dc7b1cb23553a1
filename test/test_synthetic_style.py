"""Domain randomisation: disjoint factor pools, exact geometry under every look, the camera's image effects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_synthetic import _consistent, _reprojection_check

from iggt_ros.synthetic.camera_effects import apply_effects
from iggt_ros.synthetic.render import SceneRenderer
from iggt_ros.synthetic.scene import make_scene
from iggt_ros.synthetic.sequence import make_sequence
from iggt_ros.synthetic.shapes import INTERSECT
from iggt_ros.synthetic.style import DOMAINS, ImageEffects, Lighting, SceneStyle, sample_style


def _styled(domain: str, seed: int, **changes) -> SceneStyle:
    return replace(sample_style(domain, np.random.default_rng(seed)), **changes)


def test_foreign_factor_values_never_occur_in_training_draws():
    train, foreign = DOMAINS["train"], DOMAINS["foreign"]
    held_out_textures = set(foreign.room_textures)
    assert held_out_textures.isdisjoint(train.object_textures) and held_out_textures.isdisjoint(train.room_textures)
    assert set(foreign.shapes) - set(train.shapes) == {"pyramid"}
    assert "corridor" not in train.rooms and set(foreign.shadings).isdisjoint(train.shadings)
    seen_fov, seen_textures, seen_shapes = [], set(), set()
    for seed in range(200):
        style = sample_style("train", np.random.default_rng(seed))
        seen_fov.append(style.camera.fov_deg)
        seen_textures |= {style.floor.kind, style.walls.kind}
        seen_shapes |= set(style.shapes)
        assert style.effects.vignette == 0.0 and style.lighting.shading in train.shadings
    fov = np.array(seen_fov)
    assert fov.min() < 45 and fov.max() > 95  # the whole 40-100 degree range is drawn ...
    assert not np.any((fov >= 60) & (fov < 70))  # ... except the foreign band
    assert seen_textures.isdisjoint(held_out_textures) and "pyramid" not in seen_shapes
    foreign_fov = [sample_style("foreign", np.random.default_rng(s)).camera.fov_deg for s in range(50)]
    assert all(60 <= f < 70 for f in foreign_fov)


def test_styles_are_reproducible_and_vary():
    a, b = sample_style("train", np.random.default_rng(3)), sample_style("train", np.random.default_rng(3))
    assert a == b
    looks = {sample_style("train", np.random.default_rng(s)).lighting.shading for s in range(30)}
    assert looks == {"lambert", "phong", "shadow"}


@pytest.mark.parametrize("domain,seed,room", [("train", 1, "room"), ("train", 4, "hall"), ("foreign", 2, "room")])
def test_geometry_stays_exact_under_randomised_looks(domain, seed, room):
    """New shapes, principal-point offsets, other mounts and image effects leave depth and IDs exact."""
    style = _styled(domain, seed, shapes=("ellipsoid", "prism", "pyramid", "cone", "cylinder"))
    seq = make_sequence(seed, num_steps=3, cameras=2, trajectory="orbit", width=252, height=168, num_objects=10,
                        coverage=0.05, room=room, style=style)
    assert {o.shape for o in seq.scene.objects} <= {"ellipsoid", "prism", "pyramid", "cone", "cylinder"}
    k = seq.rig.intrinsics
    assert not np.isclose(k[0, 2], (252 - 1) / 2)  # principal point moved
    for src, dst in [(seq.steps[0][0], seq.steps[0][1]), (seq.steps[1][1], seq.steps[2][0])]:
        r = _reprojection_check(src, dst)
        assert _consistent(r, 0.5, min_checked=2000, min_objects=2), r


@pytest.mark.parametrize("shape", ["cylinder", "cone", "ellipsoid", "prism", "pyramid", "box", "sphere"])
def test_intersections_accept_per_ray_origins(shape):
    """Shadow rays share a direction, not an origin: the vectorised origin form equals one call per origin."""
    rng = np.random.default_rng(0)
    extent = np.array([0.4, 0.3, 0.6])
    origins = rng.uniform(-0.4, 0.4, size=(64, 3))
    origins[:, 0] = rng.uniform(1.0, 2.5, 64)  # outside every solid
    direction = np.array([-0.9, 0.1, 0.05])
    ones = np.ones(len(origins))
    vector = INTERSECT[shape]((origins[:, 0], origins[:, 1], origins[:, 2]), direction[0] * ones,
                              direction[1] * ones, direction[2] * ones, extent)
    single = [INTERSECT[shape](tuple(o), np.array([direction[0]]), np.array([direction[1]]), np.array([direction[2]]),
                               extent)[0] for o in origins]
    np.testing.assert_allclose(vector, single)
    assert np.isfinite(vector).any() and (~np.isfinite(vector)).any()


def test_cast_shadows_darken_the_floor_behind_objects():
    light = Lighting(key_direction=(0.6, 0.0, 0.8), ambient=0.2, key=0.7, fill=0.0, lamp=0.0, shading="shadow",
                     shadow_strength=0.9)
    lit = replace(SceneStyle(), lighting=replace(light, shading="lambert", shadow_strength=0.0))
    shadowed = replace(SceneStyle(), lighting=light)
    seq_plain = make_sequence(5, num_steps=1, width=168, height=112, num_objects=12, style=lit)
    seq_shadow = make_sequence(5, num_steps=1, width=168, height=112, num_objects=12, style=shadowed)
    a, b = seq_plain.steps[0][0], seq_shadow.steps[0][0]
    np.testing.assert_array_equal(a.depth, b.depth)
    floor = (a.instance_ids == 0)
    darker = (b.rgb.astype(int).sum(-1) < a.rgb.astype(int).sum(-1) - 30) & floor
    assert darker.sum() > 50  # shadows fall on the room ...
    assert not (b.rgb.astype(int).sum(-1) > a.rgb.astype(int).sum(-1) + 3).any()  # ... and never brighten


def test_default_style_is_the_plain_look():
    scene = make_scene(11)
    assert scene.style == SceneStyle.default() and scene.style.effects.identity
    assert all(o.texture in ("plain", "stripes", "checker") and o.texture_scale == 0.25 for o in scene.objects)


def test_image_effects_change_pixels_only():
    plain = replace(SceneStyle(), seed=1)
    view = make_sequence(3, num_steps=1, width=168, height=112, num_objects=6, style=plain).steps[0][0]
    rng = np.random.default_rng(0)
    assert apply_effects(view.rgb, ImageEffects(), rng) is view.rgb
    effects = ImageEffects(gain=1.3, gamma=0.9, blur_sigma=1.0, noise_sigma=4.0, jpeg_quality=40, vignette=0.3)
    out = apply_effects(view.rgb, effects, rng)
    assert out.shape == view.rgb.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - view.rgb.astype(int))
    assert diff.mean() > 2
    corners = out[:10, :10].mean() / max(view.rgb[:10, :10].mean(), 1)
    centre = out[50:60, 80:90].mean() / max(view.rgb[50:60, 80:90].mean(), 1)
    assert corners < centre  # vignetting darkens the corners
    styled = replace(plain, effects=effects)
    a = make_sequence(3, num_steps=1, width=168, height=112, num_objects=6, style=styled).steps[0][0]
    np.testing.assert_array_equal(a.depth, view.depth)
    np.testing.assert_array_equal(a.instance_ids, view.instance_ids)


def test_forced_duplicate_pairs():
    style = _styled("foreign", 0, duplicate_pairs=4)
    scene = make_scene(910_103, num_objects=8, style=style)
    assert sum(1 for o in scene.objects if o.duplicate_of) == 4
    renderer = SceneRenderer(scene)
    assert len(renderer.primitives) == 8
