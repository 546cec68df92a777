"""Safe access to header values: a malformed value never stops a row from being built."""

from __future__ import annotations

import functools
import warnings

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import BYTES_VR

BINARY_VRS = frozenset(str(vr) for vr in BYTES_VR)
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def elements(dataset: Dataset) -> list[DataElement]:
    """Return the dataset's elements in tag order, converted from their raw form.

    An element whose value pydicom cannot convert is returned with VR UN and its raw
    bytes, so that it is kept as binary rather than lost.
    """
    with warnings.catch_warnings():
        # Values outside their VR's rules warn; they are still kept as read
        warnings.simplefilter("ignore")
        return [_element(dataset, tag) for tag in sorted(dataset.keys())]


def _element(dataset: Dataset, tag: BaseTag) -> DataElement:
    try:
        return dataset[tag]
    except Exception:
        raw = dataset.get_item(tag)  # the raw bytes are the fallback
        value = raw.value if isinstance(raw, RawDataElement) else b""
        return DataElement(tag, "UN", value if isinstance(value, bytes) else b"")


def get(dataset: Dataset, keyword: str) -> object:
    """Return an element's value, or None when missing, empty or unreadable."""
    tag = _tag(keyword)
    try:
        elem = None if tag is None else dataset.get_item(tag, keep_deferred=True)
        if isinstance(elem, DataElement):
            value = elem.value  # already converted: nothing can warn
        elif tag is not None and elem is None:
            return None
        else:
            with warnings.catch_warnings():
                # Values outside their VR's rules warn as they are converted
                warnings.simplefilter("ignore")
                value = dataset.get(keyword)
    except Exception:
        return None
    return None if value is None or value == "" else value


@functools.cache
def _tag(keyword: str) -> BaseTag | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else BaseTag(tag)
