"""Evaluation metrics — pure functions over arrays and tables (no model calls).

- :mod:`.oks`: COCO keypoint AP / OKS of processed vs original poses, per region group;
- :mod:`.identity`: per-face identity distances and leak counts;
- :mod:`.reid`: a re-identification attack (rank-1, mAP, chance levels);
- :mod:`.clinical`: clinical motion features (finger tapping, hand opening, mouth, blinks, gait);
- :mod:`.schemas`: the versioned Parquet tables the evaluation writes.
"""

from .clinical import FEATURE_NAMES, clinical_features, feature_errors, primary_person
from .identity import identity_rows, summarize_identity
from .oks import PoseEvaluation, evaluate_pose, summarize_pose
from .reid import AttackResult, reid_attack
from .schemas import SCHEMA_VERSION, read_table, status_rows, summary_row, to_table, write_dataset, write_table

__all__ = [
    "FEATURE_NAMES",
    "SCHEMA_VERSION",
    "AttackResult",
    "PoseEvaluation",
    "clinical_features",
    "evaluate_pose",
    "feature_errors",
    "identity_rows",
    "primary_person",
    "read_table",
    "reid_attack",
    "status_rows",
    "summary_row",
    "summarize_identity",
    "summarize_pose",
    "to_table",
    "write_dataset",
    "write_table",
]
