"""losses stage: global, modality-weighted local and temporal alignment (vectorised; compat and clean)."""

from medst.losses.contrastive import duplicate_report_mask, global_loss, retrieval_accuracy
from medst.losses.local import local_loss
from medst.losses.temporal import temporal_loss

__all__ = ["duplicate_report_mask", "global_loss", "local_loss", "retrieval_accuracy", "temporal_loss"]
