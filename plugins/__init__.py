"""HELIOS's built-in plugins, each registered through the `helios` entry-point group."""
