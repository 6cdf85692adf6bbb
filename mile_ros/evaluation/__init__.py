"""Evaluating intervention models: metrics, estimators, plots and the report."""
