"""The compiled core of the header path (`dicomlake_native`, built from ``native/``), if
installed: one `Core` per process, given pydicom's data dictionary and Table E.1-1."""

from __future__ import annotations

import functools
import logging
from typing import Any

from pydicom.datadict import DicomDictionary, RepeatersDictionary, masks, tag_for_keyword
from pydicom.uid import UID_dictionary

from dicomlake.dicom.deid import (
    IDENTITY_KEYWORDS,
    PROFILE,
    REPEATING_PROFILE,
    SAFE_PRIVATE,
    is_class_uid,
    most_values,
)

INTERFACE = 7
"""The interface of the compiled core this code calls (``INTERFACE`` in native/src/lib.rs)."""

log = logging.getLogger(__name__)

try:
    import dicomlake_native
except ImportError:  # not built here: headers take the pydicom path
    dicomlake_native = None
if dicomlake_native is not None and getattr(dicomlake_native, "INTERFACE", None) != INTERFACE:
    # Built from other sources than this code (an older wheel on an executor, say): calling it
    # would fail on every header, so headers take the pydicom path, slower but the same
    log.warning(
        "dicomlake_native at %s has interface %s, this dicomlake needs %s: headers are read by "
        "pydicom; build the module from this version (dev/setup.sh, dev/package.py)",
        getattr(dicomlake_native, "__file__", "?"),
        getattr(dicomlake_native, "INTERFACE", None),
        INTERFACE,
    )
    dicomlake_native = None


@functools.cache
def core() -> Any:
    """The core (None when the module is not installed), its tables made once per process."""
    if dicomlake_native is None:
        return None
    tags = []
    for tag in DicomDictionary.keys() | PROFILE.keys():
        entry = DicomDictionary.get(tag)
        vr, vm, keyword = (entry[0], entry[1], entry[4]) if entry else ("", "", None)
        row = (tag, vr, keyword, PROFILE.get(tag), is_class_uid(keyword or ""), most_values(vm))
        tags.append(row)
    repeaters = [
        (m1, m2, RepeatersDictionary[mask][0], most_values(RepeatersDictionary[mask][1]))
        for mask, (m1, m2) in masks.items()
    ]
    safe = [(creator, group, byte, vr) for (creator, group, byte), vr in SAFE_PRIVATE.items()]
    identity = [tag_for_keyword(keyword) for keyword in IDENTITY_KEYWORDS]
    return dicomlake_native.Core(
        tags, repeaters, list(REPEATING_PROFILE), list(UID_dictionary), safe, identity
    )
