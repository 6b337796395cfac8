"""EmoDB, the Berlin Database of Emotional Speech (Burkhardt et al., Interspeech 2005).

Ten German actors (five female, five male; speaker codes ``03 08 09 10 11 12
13 14 15 16``) speak ten sentences (text codes ``a01 a02 a04 a05 a07 b01 b02
b03 b09 b10``) in seven emotions, 535 utterances in all. The distribution keeps
the audio in ``wav/`` beside label folders (``lablaut/``, ``labsilb/``,
``silb/``) that hold no audio; some copies put the wav files directly in the
root. Every name has seven characters ``SSTTTEV``, for example ``03a01Wa.wav``::

    emodb/
      wav/ 03a01Fa.wav  03a01Nc.wav  03a01Wa.wav  03a02Fc.wav … 16b10Wb.wav
      lablaut/ …
      silb/ …

``SS`` speaker, ``TTT`` text, ``E`` emotion (the German initial), ``V`` version
(``a``, ``b`` … when a take was recorded more than once). The four classes of
the study are ``N`` neutral (79 utterances), ``W`` anger (*Wut*, 127), ``F``
joy (*Freude*, 71) and ``T`` sadness (*Trauer*, 62); ``L`` boredom
(*Langeweile*), ``E`` disgust (*Ekel*) and ``A`` fear (*Angst*) are skipped.
The speaker is the two-digit code ``SS``.
"""

from __future__ import annotations

import posixpath
import re

from crossemo import storage
from crossemo.corpora.base import Manifest, Skip, Utterance, by_emotion_code, scan

NAME = "emodb"
EMOTIONS = {"N": "neutral", "W": "anger", "F": "joy", "T": "sadness"}
OTHER_EMOTIONS = {"L": "boredom", "E": "disgust", "A": "fear"}
SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
_NAME = re.compile(r"^(?P<spk>\d\d)(?P<text>[ab]\d\d)(?P<emo>[a-z])(?P<ver>[a-z])\.[A-Za-z0-9]+$", re.IGNORECASE)


def parse(relative: str) -> Utterance | Skip:
    """Classify one file by its name ``SSTTTEV.wav``."""
    match = _NAME.match(posixpath.basename(relative))
    if not match:
        return Skip("file name does not follow EmoDB's SSTTTEV.wav (speaker, text, emotion, version)")
    speaker, code = match["spk"], match["emo"].upper()
    if speaker not in SPEAKERS:
        return Skip(f"unknown EmoDB speaker {speaker!r} (EmoDB has {', '.join(SPEAKERS)})")
    return by_emotion_code("EmoDB", code, speaker=speaker, emotions=EMOTIONS, others=OTHER_EMOTIONS)


def prepare_emodb(root: str, *, storage_options: storage.StorageOptions | None = None) -> Manifest:
    """List EmoDB's four-class utterances below ``root``.

    Args:
        root: the folder (or object-store prefix) holding ``wav/``, or the wav
            files themselves.
        storage_options: filesystem options for ``root``.

    Returns:
        the manifest, with boredom, disgust, fear and foreign names counted as skipped.

    Raises:
        CorpusError: ``root`` is missing or holds no EmoDB utterance.
    """
    return scan(NAME, root, parse, storage_options=storage_options)
