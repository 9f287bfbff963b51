"""What a user reads: QC figures of each scan and of the campaign, and the per-scan summary metrics."""
