"""The compiled core of the header path (`dicomlake_native`, built from ``native/``), if
installed: one `Core` per process, given pydicom's data dictionary and Table E.1-1."""

from __future__ import annotations

import functools
from typing import Any

from pydicom.datadict import DicomDictionary, RepeatersDictionary, masks, tag_for_keyword
from pydicom.uid import UID_dictionary

from dicomlake.dicom.deid import (
    IDENTITY_KEYWORDS,
    PROFILE,
    SAFE_PRIVATE,
    is_class_uid,
    most_values,
)
from dicomlake.dicom.deid_table import REPEATING

try:
    import dicomlake_native
except ImportError:  # not built here: headers take the pydicom path
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
        tags, repeaters, list(REPEATING), list(UID_dictionary), safe, identity
    )
