"""What every domain shares: the model base, domain errors, the audit log and small helpers."""
