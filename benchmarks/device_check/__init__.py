"""The short GPU check: ``python -m benchmarks.device_check OUT_DIR`` (see ``check.py``)."""
