"""Kedro glue: one package per pipeline, each with thin nodes over the posebh library."""
