"""The files of a training run folder (`sdk train --out RUN`), named once for the modules that read them."""

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
