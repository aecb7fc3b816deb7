"""The hub's dashboard: what clinicians and the clinic's administrator see (Flask on waitress).

Data flow (each module one job):

    the hub's record (hub/schema.py: devices, sessions, summaries, windows, events_raw)
      -> records.py    read queries: device overview, patient list, one patient's sessions, windows
      -> course.py     a patient's course: periods, baseline and deviation, SD and MSSD, model changes
      -> flags.py      the EWMA "review suggested" rule on session means
      -> charts.py     inline SVG (server-rendered, no scripts needed to read a chart)
      -> app.py        pages, login, CSRF, headers (device/web/security.py), audit log
    exports: fhir.py (FHIR R4 transaction Bundle, optional delivery), research.py (CSV/Parquet +
    codebook), report.py (printable report, PDF through headless Chromium)
    around it: accounts.py (people and roles), audit.py, commands.py (start/stop over MQTT),
    server.py (`affectbox-hub dashboard`).

It supports clinical judgment; it never diagnoses, and every page says so.
"""
