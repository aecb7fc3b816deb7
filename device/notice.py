"""The notice every output carries: affectbox supports clinical judgment and never diagnoses.

One place for the words, on the device (CLI, report, status page, summaries) and on the hub
(dashboard, FHIR, research exports), so they cannot drift apart.
"""

NOTICE_SHORT = "affectbox supports clinical judgment; it does not diagnose."
NOT_A_DIAGNOSIS = (
    f"{NOTICE_SHORT} Mood estimates from facial expression "
    "and voice are probabilistic and can be wrong, especially for people unlike its training data."
)
