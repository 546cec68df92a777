"""One header as read from its file, before de-identification: its values, and the pydicom
dataset they come from, built when first needed.

Where the compiled walk read the header (`split._top_level`), the values that the split and
the compiled header path read (identity, frame geometry, what de-identification starts from)
come from the walk's raw elements one by one, as the dataset would give them
(`values.raw_value`), and the dataset is built from those elements only for what needs it:
the reference header path, a value pydicom reads its dataset's way (implicit VR, a character
set, a sequence), or one of the elements after the pixel data (kept apart until then,
`merge`). Building it costs more than the values a header's split and compiled path read
(about 0.1 ms against a few µs each).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicomlake.dicom.values import (
    IN_DATASET,
    converted_element,
    direct,
    get,
    named_instance,
    raw_value,
    tag_of,
)

_UNREAD = object()  # `Original.get`: no value read yet


class Original:
    """A header as read (see the module doc): `Original.of` a dataset already read, or
    `Original.walked` from the compiled walk's reading."""

    def __init__(
        self,
        build: Callable[[], Dataset],
        walked: Any = None,
        file_meta: Dataset | None = None,
        lazy: frozenset[int] = frozenset(),
        encoding: tuple[bool | None, bool | None] = (None, None),
    ) -> None:
        self._build = build
        self._walked = walked  # `dicomlake_native.Walked`, None once values come from the dataset
        self._file_meta = file_meta
        self._lazy = lazy  # top-level sequences the dataset holds unread, not in the walk's
        self._encoding = encoding
        self._trailing: Dataset | None = None  # `merge`'s
        # `raw_value` of the walk's elements by tag, each read once: pydicom's dataset, too,
        # gives the value it converted first on every later access
        self._values: dict[int, object] = {}

    @classmethod
    def of(cls, dataset: Dataset) -> Original:
        return cls(lambda: dataset)

    @classmethod
    def walked(
        cls,
        build: Callable[[], Dataset],
        walked: Any,
        file_meta: Dataset,
        lazy: frozenset[int],
        encoding: tuple[bool, bool],
    ) -> Original:
        """``build`` makes the dataset of ``walked``'s elements, with ``file_meta`` (read
        already) and the ``lazy`` sequences; ``encoding`` is the dataset's
        ``original_encoding``."""
        return cls(build, walked, file_meta, lazy, encoding)

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The pydicom dataset (a FileDataset, file meta attached, where read from a file)."""
        dataset = self._build()
        if self._trailing is not None:
            dataset.update(self._trailing)
        return dataset

    @property
    def encoding(self) -> tuple[bool | None, bool | None]:
        """The dataset's ``original_encoding``: implicit VR, little endian."""
        if self._walked is not None:
            return self._encoding
        implicit, little = getattr(self.dataset, "original_encoding", (None, None))
        return implicit, little

    def get(self, keyword: str, *, meta: bool = False) -> object:
        """`values.get` of the dataset, or of its file meta (``meta``)."""
        if self._walked is None:
            holder = getattr(self.dataset, "file_meta", None) if meta else self.dataset
            return None if holder is None else get(holder, keyword)
        if meta:
            return get(self._file_meta, keyword)
        tag = tag_of(keyword)
        if tag is None:
            return None
        if tag in self._lazy or (self._trailing is not None and tag in self._trailing):
            return get(self.dataset, keyword)
        value = self._values.get(tag, _UNREAD)
        if value is _UNREAD:
            raw = self._walked.raw(tag)
            value = self._values[tag] = None if raw is None else raw_value(raw)
        return get(self.dataset, keyword) if value is IN_DATASET else value

    def may_be(self, text: str, keyword: str, *, meta: bool = False) -> bool:
        """Whether `get` may give ``text`` (ASCII): False, told without converting it, only
        where the element is absent or a raw UI its converter alone reads (`values.raw_value`),
        whose value is then some of its bytes decoded one to one, and they do not hold it."""
        if self._walked is None:
            return True
        tag = tag_of(keyword)
        if meta:
            raw = self._file_meta.get_item(tag, keep_deferred=True) if self._file_meta else None
        elif tag in self._lazy or tag in self._values or tag in (self._trailing or ()):
            return True
        else:
            raw = self._walked.raw(tag)
        if raw is None:
            return False
        if not isinstance(raw, RawDataElement) or raw.VR != "UI" or not direct(raw):
            return True
        return text.encode("ascii") in raw.value

    def vr(self, keyword: str) -> str | None:
        """The VR of the top-level element ``keyword`` as read (the dataset's, where the file
        does not say it: implicit VR), None when it is absent or unreadable."""
        tag = tag_of(keyword)
        if tag is None:
            return None
        if self._walked is not None and tag not in self._lazy and tag not in (self._trailing or ()):
            raw = self._walked.raw(tag)
            if raw is None:
                return None
            if raw.VR is not None:
                return str(raw.VR)
        if tag not in self.dataset:
            return None
        try:
            return str(converted_element(self.dataset, tag).VR)
        except Exception:  # a value pydicom cannot convert: none to read
            return None

    def tags(self) -> list[int]:
        """The top-level tags, ascending (the dataset's keys)."""
        if self._walked is None:
            return sorted(map(int, self.dataset.keys()))
        tags: list[int] = self._walked.tags()
        more = [*self._lazy, *map(int, self._trailing.keys() if self._trailing else ())]
        return sorted({*tags, *more}) if more else tags

    def meta_tags(self) -> list[int]:
        """The file meta's tags, ascending (none without a file meta)."""
        walked = self._walked is not None
        meta = self._file_meta if walked else getattr(self.dataset, "file_meta", None)
        return sorted(map(int, meta.keys())) if meta is not None else []

    def sop_instance_uid(self) -> tuple[str | None, bool]:
        """`values.sop_instance_uid` of the dataset."""
        return named_instance(
            self.get("SOPInstanceUID"), lambda: self.get("MediaStorageSOPInstanceUID", meta=True)
        )

    def merge(self, trailing: Dataset) -> None:
        """Add ``trailing`` (the elements after the pixel data) to the dataset, which holds them
        over any of its own of the same tags (its values are read from the dataset)."""
        if "dataset" in vars(self):  # built already
            self.dataset.update(trailing)
        self._trailing = trailing
