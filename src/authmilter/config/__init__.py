"""Configuration: TOML validated into frozen dataclasses, plus OpenDKIM datasets."""
from .schema import Settings, load_settings, settings_from_dict

__all__ = ["Settings", "load_settings", "settings_from_dict"]
