"""Input data for validation and calibration, behind one reader interface."""

from onnxslim.data.images import Preprocess, parse_preprocess
from onnxslim.data.readers import (DataBatch, RandomReader, Reader, load_samples, open_reader, random_samples,
                                   sample_count)
from onnxslim.data.subset import FirstSamples

__all__ = ["DataBatch", "FirstSamples", "Preprocess", "RandomReader", "Reader", "load_samples", "open_reader", "parse_preprocess", "random_samples",
           "sample_count"]
