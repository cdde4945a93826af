"""raypipe: behaviour logs -> user segments, profiles and recommendations, on Ray."""
__version__ = "0.1.0"
