"""The report card in the panel (plain Python): marks for the thumbnails, words and numbers for the
picked variant, and the sort keys."""

from __future__ import annotations

from blender_addon import panel_rules

GOOD = {"seam": {"x": 1.0, "y": 0.99}, "novelty": 0.93, "look": 0.29, "tiles": True, "new": True, "same_look": True}
COPY = {"seam": {"x": 1.2, "y": 3.1}, "novelty": 0.0, "look": 0.2, "tiles": False, "new": False, "same_look": True,
        "clip": 0.97}


def test_marks_say_tiles_new_and_same_look_at_a_glance():
    assert panel_rules.card_marks(GOOD) == "✓T ✓N ✓L"
    assert panel_rules.card_marks(COPY) == "✗T ✗N ✓L"
    assert panel_rules.card_marks({}) == "" and panel_rules.card_marks({"seam": {}}) == ""
    assert panel_rules.card_marks({"seam": {"x": 1.0}, "tiles": True}) == "✓T"  # a derived map: seam only


def test_details_give_the_numbers_in_words():
    good, copy = panel_rules.card_details(GOOD), panel_rules.card_details(COPY)
    assert good.startswith("Tiles (seam x 1.00, y 0.99") and "new (novelty 0.93)" in good and "same look" in good
    assert copy.startswith("Does not tile (seam x 1.20, y 3.10") and "close to a shifted copy" in copy
    assert "CLIP 0.97" in copy and "CLIP" not in good


def test_sort_keys_put_the_best_first():
    cards = [COPY, GOOD, {}]
    assert sorted(range(3), key=lambda i: panel_rules.SORT_KEYS["novelty"](cards[i])) == [1, 0, 2]
    assert sorted(range(3), key=lambda i: panel_rules.SORT_KEYS["seam"](cards[i])) == [1, 0, 2]
    assert sorted(range(3), key=lambda i: panel_rules.SORT_KEYS["look"](cards[i])) == [0, 1, 2]


def test_a_fast_variant_that_lost_the_look_says_to_make_it_again_at_full():
    lost = GOOD | {"look": 4.2, "same_look": False, "remake_full": True}
    kept = GOOD | {"remake_full": False}
    assert "make it again with Quality: Full" in panel_rules.card_details(lost)
    assert "Quality: Full" not in panel_rules.card_details(kept) + panel_rules.card_details(GOOD)
    assert panel_rules.fast_look_warning([kept, GOOD]) == ""
    assert panel_rules.fast_look_warning([lost]) == ("Quality: Fast lost the source's look in the variant (report "
                                                      "card): make it again with Quality: Full")
    assert panel_rules.fast_look_warning([kept, lost, lost, {}]).startswith("Quality: Fast lost the source's look "
                                                                            "in 2 of 4 variants")


def test_the_summary_says_a_set_was_made_at_fast():
    record = {"engine": "diffusion", "appearance": "kv", "balance": 0.5, "sampler": "fast", "fast_steps": 8}
    assert panel_rules.result_summary(record) == "diffusion variants · balance 0.50 · kv · fast, 8 steps"
    assert "fast" not in panel_rules.result_summary(record | {"sampler": "full"})
