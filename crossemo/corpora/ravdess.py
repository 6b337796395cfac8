"""RAVDESS, the Ryerson Audio-Visual Database of Emotional Speech and Song.

24 North-American actors (odd numbers male, even female). The audio-only
speech release has one folder per actor and seven two-digit fields per name,
``MM-VV-EE-II-SS-RR-AA.wav``::

    Audio_Speech_Actors_01-24/
      Actor_01/ 03-01-01-01-01-01-01.wav …
      …

``MM`` modality (03 audio-only), ``VV`` vocal channel (01 speech, 02 song),
``EE`` emotion, ``II`` intensity, ``SS`` statement, ``RR`` repetition,
``AA`` actor. Speech only is used. Emotions kept: 01 neutral, 03 happy (joy),
04 sad, 05 angry; 02 calm, 06 fearful, 07 disgust and 08 surprised are
skipped. The speaker is the actor number ``AA``.
"""

from __future__ import annotations

import posixpath
import re

from crossemo import storage
from crossemo.corpora.base import Manifest, Skip, Utterance, by_emotion_code, scan

NAME = "ravdess"
EMOTIONS = {"01": "neutral", "03": "joy", "04": "sadness", "05": "anger"}
OTHER_EMOTIONS = {"02": "calm", "06": "fear", "07": "disgust", "08": "surprise"}
_NAME = re.compile(r"^(?P<mm>\d\d)-(?P<vv>\d\d)-(?P<ee>\d\d)-(?P<ii>\d\d)-(?P<ss>\d\d)-(?P<rr>\d\d)-(?P<aa>\d\d)\.[A-Za-z0-9]+$", re.IGNORECASE)


def parse(relative: str) -> Utterance | Skip:
    """Classify one file by its name ``MM-VV-EE-II-SS-RR-AA.wav``."""
    match = _NAME.match(posixpath.basename(relative))
    if not match:
        return Skip("file name does not follow RAVDESS's MM-VV-EE-II-SS-RR-AA.wav")
    if match["mm"] != "03" or match["vv"] != "01":
        return Skip(f"not audio-only speech (modality {match['mm']}, vocal channel {match['vv']})")
    code = match["ee"]
    return by_emotion_code("RAVDESS", code, speaker=match["aa"], emotions=EMOTIONS, others=OTHER_EMOTIONS)


def prepare_ravdess(root: str, *, storage_options: storage.StorageOptions | None = None) -> Manifest:
    """List RAVDESS's four-class speech utterances below ``root``.

    Args:
        root: the folder (or object-store prefix) holding ``Actor_NN`` folders.
        storage_options: filesystem options for ``root``.

    Returns:
        the manifest, with song, other emotions and foreign names counted as skipped.

    Raises:
        CorpusError: ``root`` is missing or holds no RAVDESS utterance.
    """
    return scan(NAME, root, parse, storage_options=storage_options)
