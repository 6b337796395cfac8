"""IEMOCAP, the Interactive Emotional Dyadic Motion Capture database (Busso et al., 2008).

Ten English-speaking actors recorded five sessions, each a man and a woman in
improvised and scripted dialogs. Every dialog is cut into turns, and the
turns' emotion labels live in one text file per dialog, not in the names::

    IEMOCAP_full_release/
      Session1/
        dialog/EmoEvaluation/Ses01F_impro01.txt  Ses01F_script01_1.txt …
        dialog/wav/Ses01F_impro01.wav …          (whole dialogs: not used)
        sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav  Ses01F_impro01_M000.wav …
      …
      Session5/ …

A label file has one line per turn, fields separated by tabs::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]

followed by the single evaluators' lines (``C-E1: …``), which are not used.
A turn name is ``SesNN`` + the gender of the actor wearing the markers +
``_dialog_`` + the speaking actor's gender and a number, so the speaker of
``Ses01F_impro01_M003`` is the man of session 1, ``Ses01_M``.

The four classes are ``neu`` neutral, ``ang`` anger, ``hap`` happiness (joy)
and ``sad`` sadness. ``exc`` (excited) is skipped unless ``merge_excited`` is
set, which counts it as joy as many IEMOCAP studies do; ``fru`` frustration,
``sur`` surprise, ``fea`` fear, ``dis`` disgust, ``oth`` other and ``xxx`` (no
majority) are skipped. Only the turn recordings in ``sentences/wav`` are
listed; a turn recording without a label line and a label line without its
recording are both reported as skipped (the latter with the recording's
expected URI).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

import fsspec

from crossemo import storage
from crossemo.corpora.base import CorpusError, Manifest, Skip, Utterance, build_manifest, is_audio_like, list_audio, open_root

NAME = "iemocap"
EMOTIONS = {"neu": "neutral", "ang": "anger", "hap": "joy", "sad": "sadness"}
EXCITED = "exc"
OTHER_EMOTIONS = {
    "exc": "excited",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
    "xxx": "no majority among the evaluators",
}
MISSING_AUDIO = "labelled turn has no audio file"
_SESSION = re.compile(r"^Session\d+$")
_TURN = re.compile(r"^(?P<session>Ses\d\d)(?P<wearer>[FM])_(?P<dialog_rest>\w+?)_(?P<gender>[FM])(?P<num>\d+)$")
_LABEL_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<turn>\S+)\s+(?P<emo>\S+)\s+\[(?P<vad>[^\]]*)\]\s*$"
)


def speaker_of(turn: str) -> str | None:
    """The speaker of a turn, ``SesNN_G``, or None when the name is not a turn name."""
    match = _TURN.match(turn)
    if not match:
        return None
    return f"{match['session']}_{match['gender']}"


def dialog_of(turn: str) -> str:
    """The dialog a turn belongs to: its name without the last ``_`` field."""
    return turn.rsplit("_", 1)[0]


def parse_label_line(line: str) -> tuple[str, str] | None:
    """Read ``(turn, emotion code)`` from one line of an EmoEvaluation file.

    Returns:
        None for every other line (header, evaluators' lines, blank lines) and
        for lines whose turn name is not an IEMOCAP turn name.
    """
    match = _LABEL_LINE.match(line.strip())
    if not match or speaker_of(match["turn"]) is None:
        return None
    return match["turn"], match["emo"].lower()


def parse(relative: str, labels: Mapping[str, str], *, merge_excited: bool = False) -> Utterance | Skip:
    """Classify one turn recording ``<dialog>/<TURN>.wav`` by the label of its turn.

    Args:
        relative: the file's path (only its name is used).
        labels: emotion code per turn name, from the EmoEvaluation files.
        merge_excited: count ``exc`` as joy.
    """
    name = posixpath.basename(relative)
    stem, dot, _ = name.rpartition(".")
    if not dot or not is_audio_like(name):
        return Skip("not an audio file name")
    speaker = speaker_of(stem)
    if speaker is None:
        return Skip("file name does not follow IEMOCAP's SesNNG_<dialog>_GNNN.wav")
    code = labels.get(stem)
    if code is None:
        return Skip("no label line for this turn in the EmoEvaluation files")
    if code == EXCITED and merge_excited:
        return Utterance(speaker=speaker, emotion="joy", label=code)
    if code in EMOTIONS:
        return Utterance(speaker=speaker, emotion=EMOTIONS[code], label=code)
    if code in OTHER_EMOTIONS:
        hint = "; pass merge_excited=True to count it as joy" if code == EXCITED else ""
        return Skip(f"emotion {code} ({OTHER_EMOTIONS[code]}) is not one of the four classes{hint}")
    return Skip(f"unknown IEMOCAP emotion code {code!r}")


def read_labels(root: str, *, storage_options: storage.StorageOptions | None = None) -> dict[str, tuple[str, str]]:
    """Read every session's EmoEvaluation files.

    Returns:
        ``turn -> (emotion code, session folder name)``.

    Raises:
        CorpusError: ``root`` is missing, has no ``Session`` folder, or cannot be read.
    """
    fs, base = open_root(root, storage_options=storage_options)
    return _read_labels(fs, base, root, _sessions(fs, base, root))


def prepare_iemocap(root: str, *, storage_options: storage.StorageOptions | None = None, merge_excited: bool = False) -> Manifest:
    """List IEMOCAP's four-class turns below ``root``.

    Args:
        root: the folder (or object-store prefix) holding ``Session1 … Session5``.
        storage_options: filesystem options for ``root``.
        merge_excited: count ``exc`` (excited) as joy instead of skipping it.

    Returns:
        the manifest; other emotions, unlabelled recordings and labelled turns
        without a recording are counted as skipped.

    Raises:
        CorpusError: ``root`` is missing, has no ``Session`` folder, or holds
            no IEMOCAP utterance.
    """
    fs, base = open_root(root, storage_options=storage_options)
    sessions = _sessions(fs, base, root)
    labels = _read_labels(fs, base, root, sessions)
    codes = {turn: code for turn, (code, _) in labels.items()}
    rows, skipped, heard = [], [], set()
    for session in sessions:
        if not fs.isdir(posixpath.join(base, session, "sentences", "wav")):
            continue
        files, broken = list_audio(storage.join(root, session, "sentences", "wav"), storage_options=storage_options)
        skipped += [{"corpus": NAME, **link} for link in broken]
        for uri, relative, stamp in files:
            heard.add(posixpath.basename(relative).rpartition(".")[0])
            verdict = parse(relative, codes, merge_excited=merge_excited)
            if isinstance(verdict, Skip):
                skipped.append({"uri": uri, "corpus": NAME, "reason": verdict.reason})
            else:
                rows.append({"corpus": NAME, "speaker": verdict.speaker, "emotion": verdict.emotion, "uri": uri, "label": verdict.label, "fingerprint": stamp})
    for turn, (_, session) in sorted(labels.items()):
        if turn not in heard:
            expected = posixpath.join(base, session, "sentences", "wav", dialog_of(turn), f"{turn}.wav")
            skipped.append({"uri": storage.unstrip(fs, expected, root), "corpus": NAME, "reason": MISSING_AUDIO})
    return build_manifest(NAME, root, rows, skipped)


def _read_labels(fs: fsspec.AbstractFileSystem, base: str, root: str, sessions: list[str]) -> dict[str, tuple[str, str]]:
    """``turn -> (emotion code, session)`` from the top-level EmoEvaluation ``*.txt`` of each session."""
    labels: dict[str, tuple[str, str]] = {}
    try:
        for session in sessions:
            folder = posixpath.join(base, session, "dialog", "EmoEvaluation")
            if not fs.isdir(folder):
                continue
            names = sorted(item for item in fs.ls(folder, detail=False) if item.lower().endswith(".txt") and not posixpath.basename(item).startswith("."))
            contents = fs.cat(names) if names else {}
            for _, data in sorted(contents.items()):
                for line in data.decode("utf-8", errors="replace").splitlines():
                    parsed = parse_label_line(line)
                    if parsed:
                        labels[parsed[0]] = (parsed[1], session)
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot read IEMOCAP labels below {root}: {storage.describe_error(error)}") from error
    return labels


def _sessions(fs: fsspec.AbstractFileSystem, base: str, root: str) -> list[str]:
    """The names of the ``SessionN`` folders below ``base``, sorted."""
    try:
        entries = fs.ls(base, detail=True)
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot list corpus root {root}: {storage.describe_error(error)}") from error
    names = sorted(posixpath.basename(entry["name"].rstrip("/")) for entry in entries if entry.get("type") == "directory")
    sessions = [name for name in names if _SESSION.match(name)]
    if not sessions:
        raise CorpusError(f"IEMOCAP root {root} has no Session1 … Session5 folders")
    return sessions
