"""Choosing a feature set: a built-in openSMILE set by name, or a config by location.

=========== ======================= ========
name        openSMILE set           features
=========== ======================= ========
``is10``    IS10_paraling_compat    1582
``egemaps`` eGeMAPSv02              88
``compare`` ComParE_2016            6373
``emobase`` emobase                 988
=========== ======================= ========

``is10`` is the default: the study's emobase2010 set is the INTERSPEECH 2010
paralinguistic set. Anything else is read as the location of an openSMILE
config and adapted by :mod:`crossemo.features.smileconfig`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import opensmile

from crossemo import storage
from crossemo.features.smileconfig import CONFIG_ROOT, FUNCTIONALS_LEVEL, FeatureError, adapt_config

FEATURE_SETS: dict[str, opensmile.FeatureSet] = {
    "is10": opensmile.FeatureSet.IS10,
    "egemaps": opensmile.FeatureSet.eGeMAPSv02,
    "compare": opensmile.FeatureSet.ComParE_2016,
    "emobase": opensmile.FeatureSet.emobase,
}
"""Built-in feature sets by crossemo name."""

DEFAULT_FEATURE_SET: str = "is10"


_UNKNOWN_MESSAGE = "unknown feature set {spec!r}; known: is10, egemaps, compare, emobase, or a path to an openSMILE .conf"



@dataclass(frozen=True)
class FeatureSetSpec:
    """A resolved feature set.

    Attributes:
        id: ``is10`` … for built-ins, ``config-<16 hex>`` for custom configs.
        level: the data memory level read by the sink.
        config_text: the adapted text of a custom config; ``None`` for built-ins.
        streamable: whether audio may be streamed through a ring buffer.
    """

    id: str
    level: str
    config_text: str | None = None
    streamable: bool = True

    @property
    def builtin(self) -> bool:
        """Whether this is one of :data:`FEATURE_SETS`."""
        return self.config_text is None

    @property
    def config_path(self) -> str | None:
        """The installed config of a built-in set, in this process's opensmile package."""
        # Resolved where it is used: a Ray worker's package may live elsewhere.
        if not self.builtin:
            return None
        return str(CONFIG_ROOT / f"{FEATURE_SETS[self.id].value}{opensmile.config.CONFIG_EXT}")


def resolve_feature_set(spec: str, *, storage_options: storage.StorageOptions | None = None) -> FeatureSetSpec:
    """Resolve a feature set name or config location.

    Args:
        spec: ``is10``, ``egemaps``, ``compare``, ``emobase`` (any case), or a
            local path or URI of an openSMILE config.
        storage_options: filesystem options for a config URI.

    Returns:
        the resolved feature set.

    Raises:
        FeatureError: for unknown names, missing files and configs that cannot
            be adapted.
    """
    name = spec.strip().lower()
    if name in FEATURE_SETS:
        return FeatureSetSpec(id=name, level=FUNCTIONALS_LEVEL)
    looks_like_path = "/" in spec or os.sep in spec or "://" in spec or spec.endswith((".conf", ".inc"))
    if not looks_like_path and not os.path.isfile(spec):
        raise FeatureError(_UNKNOWN_MESSAGE.format(spec=spec))
    try:
        found = storage.exists(spec, storage_options=storage_options)
    except (OSError, ValueError) as error:
        raise FeatureError(f"{_UNKNOWN_MESSAGE.format(spec=spec)} ({storage.describe_error(error)})") from None
    if not found:
        raise FeatureError(f"{_UNKNOWN_MESSAGE.format(spec=spec)} (no such file)")
    adapted = adapt_config(spec, storage_options=storage_options)
    digest = hashlib.sha256(adapted.text.encode("utf-8")).hexdigest()
    return FeatureSetSpec(id=f"config-{digest[:16]}", level=adapted.level, config_text=adapted.text, streamable=adapted.streamable)
