"""Data: CBIS-DDSM metadata and layouts, DICOM decoding, the embedded phantom, splits, shards."""
