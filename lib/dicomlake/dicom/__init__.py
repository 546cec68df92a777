"""Pure DICOM handling: bytes in, header records, DICOM JSON, element rows and frames out.

No pyspark and no filesystem here; see ``split_instance`` for the entry point.
"""

from dicomlake.dicom.dicomjson import header_json
from dicomlake.dicom.elements import ELEMENT_SCHEMA, element_rows
from dicomlake.dicom.frames import encapsulated_frame_array, fragments_payload, frame_array
from dicomlake.dicom.promote import PROMOTED, promoted_values
from dicomlake.dicom.split import FrameSpec, SplitInstance, split_instance, split_stream

__all__ = [
    "ELEMENT_SCHEMA",
    "PROMOTED",
    "FrameSpec",
    "SplitInstance",
    "element_rows",
    "encapsulated_frame_array",
    "fragments_payload",
    "frame_array",
    "header_json",
    "promoted_values",
    "split_instance",
    "split_stream",
]
