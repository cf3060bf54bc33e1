"""ValidateModel: the quality gates, their metrics, and the report."""
