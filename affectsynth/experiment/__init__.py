"""The augmentation experiment (``scripts/augment_experiment.py``): dataset readers (:mod:`.datasets`),
face alignment (:mod:`.align`), the small CNN (:mod:`.cnn`) and the protocol and report (:mod:`.protocol`)."""

from .datasets import FaceSample, read_dataset
from .protocol import ExperimentOptions, ExperimentReport, run_experiment

__all__ = ["FaceSample", "read_dataset", "ExperimentOptions", "ExperimentReport", "run_experiment"]
