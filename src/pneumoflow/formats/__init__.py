"""File formats and readers: DICOM, JPEG, label CSVs, image decoding, mask PNGs, array shards, figures."""
