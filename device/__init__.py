"""affectbox: on-device facial and vocal mood estimation for clinic sessions.

Supports clinical judgment in depression care; it never diagnoses.
"""

__version__ = "0.1.0"
