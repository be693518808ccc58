"""In real Blender: packed and generated images are sources just like a texture file on disk."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def sources(tmp_path_factory, blender, color_texture_path):
    workdir = tmp_path_factory.mktemp("sources")
    return run_scenario("scenario_sources", workdir, blender, color_texture_path)


@pytest.mark.parametrize("case", ["packed", "generated"])
def test_source_gives_variants_that_apply(sources, case):
    outcome = sources[case]
    assert outcome["result"] == ["FINISHED"], outcome["error"]
    assert [r["size"] for r in outcome["results"]] == [[64, 64], [64, 64]]
    assert {r["engine"] for r in outcome["results"]} == {"patch"}
    for r in outcome["results"]:
        with Image.open(r["path"]) as image:
            assert image.size == (64, 64)
    assert len(outcome["reference_files"]) == 1  # the texture was exported into the job folder
    assert outcome["apply"]["error"] is None
    assert outcome["base_color"] == outcome["variant_names"][0]
    assert outcome["source_pixels_unchanged"]


def test_packed_source_stays_packed_and_variants_keep_its_colour_space(sources):
    outcome = sources["packed"]
    assert outcome["source_state"][1] is True
    assert outcome["reference_files"][0].endswith(".png")
    assert {r["colorspace"] for r in outcome["results"]} == {"Non-Color"}


def test_generated_source_is_not_turned_into_a_file(sources):
    assert sources["generated"]["source_state"][:2] == ["GENERATED", False]
    assert sources["generated_still_generated"] == ["GENERATED", True]


def test_bake_of_a_painted_variant_writes_the_painted_pixels(sources):
    assert sources["painted_dirty"] and sources["painted_bake"]["error"] is None
    with Image.open(sources["painted_baked_file"]) as baked:
        assert baked.size == (64, 64)
        assert baked.convert("RGB").getpixel((0, 63)) == (0, 255, 0)  # Blender's rows start at the bottom
    assert sources["painted_job_file_unchanged"]
    assert sources["painted_project_files"] == [sources["painted_baked_file"].rsplit("/", 1)[1]]


def test_randomise_stores_the_seed_each_result_was_made_with(sources):
    (stored1, used1), (stored2, used2) = sources["randomised_seeds"]
    assert stored1 == used1 and stored2 == used2
    assert stored1 != stored2  # two draws from 2**31 seeds
