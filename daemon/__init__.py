"""mediasortd: a crash-safe daemon that files photos and videos into a date-sorted library."""

__version__ = "0.1.0"
