"""Safe access to header values: a malformed value never stops a row from being built."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import BYTES_VR

BINARY_VRS = frozenset(str(vr) for vr in BYTES_VR)
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def elements(dataset: Dataset) -> Iterator[DataElement]:
    """Yield the dataset's elements in tag order, converted from their raw form.

    An element whose value pydicom cannot convert is yielded with VR UN and its raw
    bytes, so that it is kept as binary rather than lost.
    """
    for tag in sorted(dataset.keys()):
        try:
            with warnings.catch_warnings():
                # Values outside their VR's rules warn; they are still kept as read
                warnings.simplefilter("ignore")
                yield dataset[tag]
        except Exception:
            raw = dataset._dict[tag]  # noqa: SLF001 - the raw bytes are the fallback
            value = raw.value if isinstance(raw, RawDataElement) else b""
            yield DataElement(tag, "UN", value if isinstance(value, bytes) else b"")


def get(dataset: Dataset, keyword: str) -> object:
    """Return an element's value, or None when missing, empty or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = dataset.get(keyword)
    except Exception:
        return None
    return None if value is None or value == "" else value
