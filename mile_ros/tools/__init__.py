"""Command-line tools: train, collect, demo and eval-interventions."""
