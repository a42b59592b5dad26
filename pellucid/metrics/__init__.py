"""Faithfulness and localization metrics; they consume heatmaps and return MetricResults."""
