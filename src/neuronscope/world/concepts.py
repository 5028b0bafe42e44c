"""The concepts of the mini CLIP's world, and the prompts that name them.

Each concept is one plain English word, as the captions use it, drawn from
folders of Debian's ``openclipart-png``. A file belongs to its deepest folder,
so a concept lists every folder whose own files it takes (subfolders are
listed explicitly, never implied).
"""

from __future__ import annotations

from dataclasses import dataclass

CLIPART_ROOT = "/usr/share/openclipart/png"


@dataclass(frozen=True)
class Concept:
    """A concept word and the clipart folders (relative to the root) it takes files from."""

    word: str
    folders: tuple[str, ...]


def _flags(region: str, countries: tuple[str, ...] = ()) -> tuple[str, ...]:
    base = f"signs_and_symbols/flags/{region}"
    return (base,) + tuple(f"{base}/{country}" for country in countries)


CONCEPTS: tuple[Concept, ...] = (
    Concept("star", ("shapes/stars",)),
    Concept("arrow", ("shapes/arrows",)),
    Concept("puzzle", ("shapes/jigsaw",)),
    Concept("diagram", ("shapes/flowchart",)),
    Concept("bubble", ("shapes/callouts",)),
    Concept("card", tuple(f"recreation/games/cards{sub}" for sub in ("", "/white", "/simple", "/ornamental", "/bordered", "/cardbacks"))),
    Concept("music", ("recreation/music",)),
    Concept("sport", ("recreation/sports",)),
    Concept("toy", ("recreation/toys",)),
    Concept("party", ("recreation/party",)),
    Concept("holiday", ("recreation/holiday",)),
    Concept("vehicle", ("transportation/vehicles",)),
    Concept("sign", ("transportation/roadsigns",)),
    Concept("boat", ("transportation/boating",)),
    Concept("dessert", ("food/desserts",)),
    Concept("fruit", ("food/fruit",)),
    Concept("drink", ("food/beverages",)),
    Concept("meat", ("food/meats_and_eggs",)),
    Concept("bread", ("food/breads_and_carbs",)),
    Concept("bird", ("animals/birds",)),
    Concept("bug", ("animals/bugs",)),
    Concept("fish", ("animals/fish",)),
    Concept("mammal", ("animals/mammals",)),
    Concept("smiley", ("people/smilies",)),
    Concept("stickman", ("people/stickmen",)),
    Concept("body", ("people/bodypart",)),
    Concept("hat", ("people/clothing/hats",)),
    Concept("clothes", ("people/clothing",)),
    Concept("house", ("buildings/homes",)),
    Concept("flower", ("plants/flowers",)),
    Concept("plant", ("plants",)),
    Concept("weather", ("signs_and_symbols/weather",)),
    Concept("clock", ("signs_and_symbols/clocks",)),
    Concept("computer", ("computer/hardware",)),
    Concept("electronics", ("electronics",)),
    Concept("tool", ("tools",)),
    Concept("weapon", ("tools/weapons",)),
    Concept("book", ("education/books",)),
    Concept("planet", ("geography/astronomy",)),
    Concept("europe", _flags("europe", ("denmark", "united_kingdom", "finland", "belgium", "norway", "france", "italy", "spain", "germany"))),
    Concept("america", _flags("america", ("united_states", "canada"))),
    Concept("asia", _flags("asia", ("china",))),
    Concept("africa", _flags("africa")),
)

#: The world's zero-shot prompt: captions of drawings use it, so zero-shot does too.
ZEROSHOT_TEMPLATE = "a {}"

#: Caption templates by kind of training image. Words and reading text are
#: captioned with the text they show, as web captions of signs often are.
CAPTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "drawing": ("a {}", "a drawing of a {}", "{}", "clipart of a {}"),
    "word": ("{}", "the word {}", "a sign that says {}", "a {}"),
    "composite": ("a {}", "a drawing of a {} with the word {}", "a {} labelled {}", "{}"),
    "reading": ("{}", "the word {}", "a sign that says {}"),
}


def concept_names() -> list[str]:
    """The concept words exactly as the captions use them, in the world's order."""
    return [concept.word for concept in CONCEPTS]
