"""The NiceGUI console, served by heliosd itself."""
