"""SAVEE, the Surrey Audio-Visual Expressed Emotion database (Haq & Jackson, 2009).

Four male British English speakers (``DC JE JK KL``) read phonetically balanced
sentences in seven emotions: per speaker 30 neutral and 15 of each other
emotion, 480 utterances in all. The distribution's ``AudioData`` folder has one
folder per speaker with names ``<code><nn>.wav``; a widespread flat copy puts
every file in one folder as ``<SPK>_<code><nn>.wav``::

    AudioData/                          ALL/
      DC/ a01.wav … n30.wav sa15.wav      DC_a01.wav … KL_su15.wav
      JE/ …
      JK/ …
      KL/ …

The emotion codes are ``n`` neutral, ``a`` anger, ``h`` happiness (joy),
``sa`` sadness, ``d`` disgust, ``f`` fear and ``su`` surprise; the last three
are skipped. Kept in all: 120 neutral and 60 of each other class. The speaker
is the folder name (nested form) or the prefix before ``_`` (flat form).
"""

from __future__ import annotations

import posixpath
import re

from crossemo import storage
from crossemo.corpora.base import Manifest, Skip, Utterance, by_emotion_code, scan

NAME = "savee"
EMOTIONS = {"n": "neutral", "a": "anger", "h": "joy", "sa": "sadness"}
OTHER_EMOTIONS = {"d": "disgust", "f": "fear", "su": "surprise"}
SPEAKERS = ("DC", "JE", "JK", "KL")
_NESTED = re.compile(r"^(?P<code>[a-z]{1,2})(?P<num>\d\d)\.[A-Za-z0-9]+$", re.IGNORECASE)
_FLAT = re.compile(r"^(?P<spk>[a-z]{2})_(?P<code>[a-z]{1,2})(?P<num>\d\d)\.[A-Za-z0-9]+$", re.IGNORECASE)


def parse(relative: str) -> Utterance | Skip:
    """Classify one file by ``<SPK>/<code><nn>.wav`` or ``<SPK>_<code><nn>.wav``."""
    name = posixpath.basename(relative)
    flat = _FLAT.match(name)
    if flat:
        speaker, code = flat["spk"].upper(), flat["code"].lower()
    else:
        nested = _NESTED.match(name)
        if not nested:
            return Skip("file name does not follow SAVEE's <SPK>/<code><nn>.wav or <SPK>_<code><nn>.wav")
        folder = posixpath.basename(posixpath.dirname(relative))
        if folder.upper() not in SPEAKERS:
            return Skip(f"SAVEE file is not in a speaker folder ({', '.join(SPEAKERS)})")
        speaker, code = folder.upper(), nested["code"].lower()
    if speaker not in SPEAKERS:
        return Skip(f"unknown SAVEE speaker {speaker!r} (SAVEE has {', '.join(SPEAKERS)})")
    return by_emotion_code("SAVEE", code, speaker=speaker, emotions=EMOTIONS, others=OTHER_EMOTIONS)


def prepare_savee(root: str, *, storage_options: storage.StorageOptions | None = None) -> Manifest:
    """List SAVEE's four-class utterances below ``root``.

    Args:
        root: the folder (or object-store prefix) holding the speaker folders
            (``AudioData``) or the flat ``<SPK>_<code><nn>.wav`` files.
        storage_options: filesystem options for ``root``.

    Returns:
        the manifest, with disgust, fear, surprise and foreign names counted as skipped.

    Raises:
        CorpusError: ``root`` is missing or holds no SAVEE utterance.
    """
    return scan(NAME, root, parse, storage_options=storage_options)
