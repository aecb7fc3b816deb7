"""The appliance daemon (`affectbox run`): live capture, sessions, the local record and the hub link.

- service.py: builds everything from the config, signals, sd_notify, status; the entry point.
- recorder.py: the one thread that owns sessions: aggregation, the store, hub events.
- workers.py: the face and speech analysis threads between capture and the recorder.
- control.py: the local control socket behind `affectbox session start/stop/status`.
- faults.py: fault injection for the reliability tests (off unless AFFECTBOX_FAULTS is set).
- debug_recording.py: the opt-in, time-limited raw recording for troubleshooting.
"""
