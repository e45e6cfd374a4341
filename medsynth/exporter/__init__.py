"""Export: synthetic sets as NIfTI, DICOM (+SEG) and training layouts, with a manifest and a dataset card."""
