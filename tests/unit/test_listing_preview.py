"""A slowly listed input (a prefix of objects) is surveyed while it is scored: the survey of more than
``LISTING_PREVIEW`` images hands the scorer a preview of the first ones (``--labels auto`` settled, their labels
checked), then ends with the same counts as a survey without a preview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FASHION_LABELS

from tfclassify.client.inputs import plan as plan_module
from tfclassify.client.inputs.plan import ScoringPlan, Survey, SurveyStopped
from tfclassify.common.inputs.labels import NOT_IN_CLASS_FOLDER, LabelError, LabelResolver
from tfclassify.common.inputs.sources import FileRef, Input, InputError, Item

PREVIEW = 10


class ListedInput(Input):
    """Files by name, listed as a prefix of objects is (slowly: the plan surveys it beside the scoring)."""

    lists_slowly = True

    def __init__(self, members: list[str]) -> None:
        super().__init__(Path("bucket"), "bucket")
        self.members = members
        self.given = 0  # items listed, over all listings

    def items(self, with_data: bool = True) -> Iterator[Item]:
        for member in self.members:
            self.given += 1
            yield Item(f"bucket/{member}", member, FileRef(f"s3://bucket/{member}"))


@pytest.fixture(autouse=True)
def small_preview(monkeypatch):
    monkeypatch.setattr(plan_module, "LISTING_PREVIEW", PREVIEW)


def members(n: int, folder: str = "Bag", start: int = 0) -> list[str]:
    return [f"{folder}/{i:05d}.png" for i in range(start, start + n)]


def survey_with_previews(plan: ScoringPlan) -> tuple[Survey, list[Survey]]:
    previews: list[Survey] = []
    return plan.survey(LabelResolver(FASHION_LABELS), previews.append), previews


def test_a_long_listing_previews_its_first_images_and_ends_with_the_counts_of_a_plain_survey():
    names = members(15) + members(12, "Coat")
    for shard in (0, 1):
        survey, previews = survey_with_previews(ScoringPlan([ListedInput(names)], "folder", shard=(shard, 2)))
        plain = ScoringPlan([ListedInput(names)], "folder", shard=(shard, 2)).survey(LabelResolver(FASHION_LABELS))
        assert survey == plain and survey.complete and survey.total == 27
        [preview] = previews
        assert not preview.complete and preview.total == PREVIEW and sum(preview.shard_sizes) == PREVIEW
        assert preview.to_dict() == {"total": None, "shard_sizes": None, "digest": None,
                                     "listed_before_scoring": PREVIEW}


@pytest.mark.parametrize("n", [1, PREVIEW])
def test_a_listing_of_at_most_the_preview_is_surveyed_whole_first(n):
    survey, previews = survey_with_previews(ScoringPlan([ListedInput(members(n))], "folder"))
    assert previews == [] and survey.complete and survey.total == n


def test_auto_labels_are_settled_from_the_preview_and_hold_for_the_rest():
    """Class folders first: folder labels; a later file outside every folder, or in a folder that is not a
    class, is scored without a true label (as every file would have been, had the listing been short), neither
    skipped nor an error. Files outside class folders first: no labels, though later ones sit in class folders.
    --labels folder itself still skips a file outside the class folders."""
    resolver = LabelResolver(FASHION_LABELS)
    names = members(PREVIEW, "Bag") + ["loose.png", "zz/odd.png"]
    plan = ScoringPlan([ListedInput(names)], "auto")
    previews: list[Survey] = []
    survey = plan.survey(resolver, previews.append)
    assert previews and plan.identity()["labels"] == "folder"
    assert survey.labelled == PREVIEW + 1 and survey.unfiled == 0 and "class folders" in plan.notes[0]
    [chunk] = plan.chunks(resolver, batch_size=64)
    assert chunk.skipped == {}
    assert chunk.true == [FASHION_LABELS.index("Bag")] * PREVIEW + [None, None]
    folder = ScoringPlan([ListedInput(names[:-1])], "folder")
    folder.survey(resolver, lambda s: None)
    [chunk] = folder.chunks(resolver, batch_size=64)
    assert chunk.skipped == {PREVIEW: NOT_IN_CLASS_FOLDER}

    plan = ScoringPlan([ListedInput(members(PREVIEW, "misc") + members(5, "Bag"))], "auto")
    survey = plan.survey(resolver, lambda s: None)
    assert plan.identity()["labels"] is None and survey.labelled == 0
    assert all(t is None for chunk in plan.chunks(resolver, 64) for t in chunk.true)


def test_a_label_that_is_not_a_class_fails_the_preview_or_the_end_of_the_listing():
    resolver = LabelResolver(FASHION_LABELS)
    early = ScoringPlan([ListedInput(members(3, "Bag") + members(3, "Zeppelin") + members(20, "Coat"))], "folder")
    previews: list[Survey] = []
    with pytest.raises(LabelError, match="'Zeppelin' is not a class"):
        early.survey(resolver, previews.append)
    assert previews == [], "nothing to score before the error"

    listed = ListedInput(members(20, "Bag") + members(3, "Zeppelin") + members(50, "Coat"))
    with pytest.raises(LabelError, match="'Zeppelin' is not a class"):
        ScoringPlan([listed], "folder").survey(resolver, previews.append)
    assert len(previews) == 1, "scoring started from the preview"
    assert listed.given == 21, "the error comes at the first such label, not when the listing ends"


def test_a_bad_preview_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("TFCLASSIFY_LISTING_PREVIEW", "many")
    with pytest.raises(InputError, match="TFCLASSIFY_LISTING_PREVIEW='many': expected a whole number"):
        ScoringPlan([ListedInput(members(5))], "folder").survey(LabelResolver(FASHION_LABELS), lambda s: None)


def test_a_stopped_survey_stops_listing():
    plan = ScoringPlan([ListedInput(members(50))], "folder")
    plan.stop_survey()
    with pytest.raises(SurveyStopped):
        plan.survey(LabelResolver(FASHION_LABELS), lambda s: None)
