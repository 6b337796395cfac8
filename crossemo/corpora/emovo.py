"""EMOVO, the Italian emotional speech corpus (Costantini et al., LREC 2014).

Six actors (three female ``f1 f2 f3``, three male ``m1 m2 m3``) read 14
sentences in seven emotions. The distribution has one folder per speaker with
files named ``EMO-SPK-SENT.wav``, for example ``rab-f2-b1.wav``::

    EMOVO/
      f1/ dis-f1-b1.wav  gio-f1-b1.wav  neu-f1-b1.wav  pau-f1-b1.wav  rab-f1-b1.wav  sor-f1-b1.wav  tri-f1-b1.wav …
      …
      m3/ …

The four classes of the study are ``neu`` (neutral), ``rab`` (anger),
``gio`` (joy) and ``tri`` (sadness), 84 utterances each; ``dis``, ``pau`` and
``sor`` are skipped. Most files are stereo with anti-correlated channels:
see :mod:`crossemo.audio` for how they become mono.
"""

from __future__ import annotations

import posixpath
import re

from crossemo import storage
from crossemo.corpora.base import Manifest, Skip, Utterance, by_emotion_code, scan

NAME = "emovo"
EMOTIONS = {"neu": "neutral", "rab": "anger", "gio": "joy", "tri": "sadness"}
OTHER_EMOTIONS = {"dis": "disgust", "pau": "fear", "sor": "surprise"}
SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
_NAME = re.compile(r"^(?P<emo>[a-z]{3})-(?P<spk>[fm][1-3])-(?P<sent>[a-z]\d+)\.[A-Za-z0-9]+$", re.IGNORECASE)


def parse(relative: str) -> Utterance | Skip:
    """Classify one file by its name ``EMO-SPK-SENT.wav``."""
    match = _NAME.match(posixpath.basename(relative))
    if not match:
        return Skip("file name does not follow EMOVO's EMO-SPK-SENT.wav")
    code, speaker = match["emo"].lower(), match["spk"].lower()
    return by_emotion_code("EMOVO", code, speaker=speaker, emotions=EMOTIONS, others=OTHER_EMOTIONS)


def prepare_emovo(root: str, *, storage_options: storage.StorageOptions | None = None) -> Manifest:
    """List EMOVO's four-class utterances below ``root``.

    Args:
        root: the folder (or object-store prefix) holding ``f1 … m3``.
        storage_options: filesystem options for ``root``.

    Returns:
        the manifest, with the other emotions' files counted as skipped.

    Raises:
        CorpusError: ``root`` is missing or holds no EMOVO utterance.
    """
    return scan(NAME, root, parse, storage_options=storage_options)
