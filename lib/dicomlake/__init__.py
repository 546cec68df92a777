"""dicomlake: raw DICOM landing zones into an encrypted, queryable data lake."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
