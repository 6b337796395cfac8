"""Corpus recipes: each turns one corpus's own layout into a :class:`Manifest`.

A recipe is looked up by name (``--corpus NAME=URI`` on the command line).
The corpus name written into every output is the recipe's name, except for
``manifest``, whose rows carry the ``corpus`` option (by default the manifest
file's name without its suffix).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from crossemo import storage
from crossemo.corpora import emodb, emovo, iemocap, manifest, ravdess, savee
from crossemo.corpora.base import CorpusError, Manifest

__all__ = ["RECIPES", "CorpusError", "Manifest", "Recipe", "prepare"]


@dataclass(frozen=True)
class Recipe:
    """One corpus recipe.

    Attributes:
        name: the name the recipe is chosen by, and (except for ``manifest``)
            the corpus name in every output.
        summary: one line saying what the recipe reads.
        prepare: ``prepare(root, *, storage_options=None, **options) -> Manifest``.
    """

    name: str
    summary: str
    prepare: Callable[..., Manifest]

    def options(self) -> tuple[str, ...]:
        """The recipe's own keyword options, besides ``storage_options``."""
        parameters = inspect.signature(self.prepare).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "storage_options")


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(emodb.NAME, "Berlin EmoDB: wav/SSTTTEV.wav, 10 German actors", emodb.prepare_emodb),
        Recipe(emovo.NAME, "EMOVO: <speaker>/EMO-SPK-SENT.wav, 6 Italian actors", emovo.prepare_emovo),
        Recipe(iemocap.NAME, "IEMOCAP: SessionN/sentences/wav turns labelled by dialog/EmoEvaluation/*.txt", iemocap.prepare_iemocap),
        Recipe(manifest.NAME, "your own corpus: a CSV or Parquet file with columns path, speaker, emotion[, label], named after the file (mine.csv: mine)", manifest.prepare_manifest),
        Recipe(ravdess.NAME, "RAVDESS speech: Actor_NN/03-01-EE-II-SS-RR-AA.wav, 24 North-American actors", ravdess.prepare_ravdess),
        Recipe(savee.NAME, "SAVEE: AudioData/<SPK>/<code><nn>.wav or <SPK>_<code><nn>.wav, 4 British speakers", savee.prepare_savee),
    )
}
"""Every recipe by name, sorted by name."""


def prepare(name: str, root: str, *, storage_options: storage.StorageOptions | None = None, **options: object) -> Manifest:
    """Run the recipe called ``name`` on ``root``.

    Args:
        name: a key of :data:`RECIPES`.
        root: the corpus folder or object-store prefix (for ``manifest``, the
            manifest file).
        storage_options: filesystem options for ``root``.
        **options: the recipe's own options, such as ``merge_excited`` for
            ``iemocap`` or ``corpus`` for ``manifest``.

    Returns:
        the recipe's manifest.

    Raises:
        CorpusError: the recipe is unknown, does not take one of ``options``,
            or cannot read ``root``.
    """
    recipe = RECIPES.get(name)
    if recipe is None:
        raise CorpusError(f"unknown corpus recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    unknown = sorted(set(options) - set(recipe.options()))
    if unknown:
        takes = ", ".join(recipe.options()) or "no options"
        raise CorpusError(f"corpus recipe {name!r} does not take the option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (it takes: {takes})")
    return recipe.prepare(root, storage_options=storage_options, **options)
