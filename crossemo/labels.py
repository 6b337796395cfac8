"""The label space shared by every corpus and the manifest schema.

The study keeps the four emotions that every public corpus it uses has in
common; every recipe maps its own codes onto these names.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("neutral", "anger", "joy", "sadness")
"""The four classes of the study, in the order tables and matrices use."""

MANIFEST_COLUMNS: tuple[str, ...] = ("corpus", "speaker", "emotion", "uri", "label")
"""One manifest row per utterance: ``label`` is the corpus's own code."""

METADATA_COLUMNS: tuple[str, ...] = ("corpus", "speaker", "emotion", "uri", "sha256")
"""The leading columns of the feature store (``sha256``: of the audio bytes); every other column is a feature."""
