"""crossemo: transfer speech-emotion knowledge from public corpora to a few speakers of your own."""

__version__ = "0.1.0"
