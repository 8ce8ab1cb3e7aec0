"""Readers that turn folders, archives and array files into model input."""
