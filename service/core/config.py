"""The service's settings: the one validated object shared with the workers."""

from neuronscope.settings import Settings, SettingsError, get_settings

__all__ = ["Settings", "SettingsError", "get_settings"]
