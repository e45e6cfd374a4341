"""Writing a single-frame series fast: the attributes every slice shares are encoded once, per slice only the few
that change (SOP Instance UID, Instance Number, position, slice location) and the pixel bytes.

The bytes are those pydicom's own writer produces for the same dataset (tested), in Explicit VR Little Endian.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import Tag

PREAMBLE = b"\x00" * 128 + b"DICM"
PIXEL_DATA = Tag(0x7FE0, 0x0010)


def _buffer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    return fp


class SeriesWriter:
    """Encodes `template` once around the attributes named in `varying` (and Pixel Data)."""

    def __init__(self, template: Dataset, varying: tuple[str, ...]) -> None:
        self.encodings = convert_encodings(template.get("SpecificCharacterSet", "ISO_IR 6"))
        self.varying = [Tag(template.data_element(k).tag) for k in varying]
        self.parts: list[bytes | Tag] = []   # encoded runs of shared elements, and the varying tags between them
        fp = _buffer()
        for elem in template:  # pydicom iterates in ascending tag order
            if elem.tag in self.varying or elem.tag == PIXEL_DATA:
                self.parts += [fp.getvalue(), elem.tag]
                fp = _buffer()
            else:
                write_data_element(fp, elem, self.encodings)
        self.parts.append(fp.getvalue())

    def write(self, path: Path, meta: FileMetaDataset, values: Dataset, pixels: bytes) -> None:
        """One file: preamble, file meta, shared runs with this slice's values and pixel bytes in place."""
        head = _buffer()
        write_file_meta_info(head, meta, enforce_standard=True)
        chunks = [PREAMBLE, head.getvalue()]
        for part in self.parts:
            if isinstance(part, bytes):
                chunks.append(part)
            elif part == PIXEL_DATA:  # OW, explicit VR: tag, 'OW', 2 reserved bytes, 4-byte length, data
                chunks.append(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + pixels)
            else:
                fp = _buffer()
                write_data_element(fp, values[part], self.encodings)
                chunks.append(fp.getvalue())
        Path(path).write_bytes(b"".join(chunks))
