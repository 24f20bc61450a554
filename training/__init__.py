"""Switchboard training: datasets, model setup, training, evaluation, export and registry."""
